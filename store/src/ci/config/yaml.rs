//! YAML as each CI's own parser reads it, with the line of every node so
//! errors can point at it. An adapter over `yaml-rust2`'s event parser
//! (serde_yaml_ng refuses a repeated key, which GitLab and CircleCI
//! accept, and loses lines and tags such as GitLab's `!reference`). The
//! three dialects differ in what a mapping does with `<<` merge keys and
//! with a key written twice (docs/ci.md, "YAML"). Knows nothing about jobs.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// How a CI's YAML parser treats merge keys and repeated keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Ruby's Psych (GitLab) and CircleCI: a mapping's entries apply in
    /// order, each `<<` merging where it stands (however many there are)
    /// and a key written again replacing the earlier value.
    Sequential,
    /// The YAML merge rule as go-yaml applies it (Buildkite's agent): a
    /// mapping's own keys win over merged ones, an earlier merge over a
    /// later one; a key written twice: the last wins.
    MergeSpec,
    /// GitHub Actions: a key written twice in one mapping (compared without
    /// case) is an error; merges as `MergeSpec`.
    Strict,
}

/// A YAML value with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line in its file.
    pub line: usize,
    /// A local tag (`!reference`), without the `!`.
    pub tag: Option<String>,
    /// The value.
    pub value: Value,
}

/// One key of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key, as a string.
    pub key: String,
    /// Where the key is written.
    pub line: usize,
    /// Its value.
    pub value: Node,
}

/// What a node holds. Scalars stay strings as written (`18`, `3.10`,
/// `true`), as CIs put them into names.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// Any other scalar.
    Scalar(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in order, each key once.
    Map(Vec<Entry>),
}

/// A YAML error at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Node {
    /// A node with no tag.
    pub fn new(line: usize, value: Value) -> Node {
        Node {
            line,
            tag: None,
            value,
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// A mapping's entries.
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A sequence's items.
    pub fn items(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar's text.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is null.
    pub fn is_null(&self) -> bool {
        self.value == Value::Null
    }

    /// A string, or the strings of a list (other items skipped).
    pub fn strings(&self) -> Vec<String> {
        match &self.value {
            Value::Scalar(s) => vec![s.clone()],
            Value::Seq(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        }
    }
}

/// Parses `text` (one document) as `dialect` reads it.
pub fn load(text: &str, dialect: Dialect) -> Result<Node, YamlError> {
    let mut builder = Builder {
        dialect,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        error: None,
    };
    Parser::new_from_str(text)
        .load(&mut builder, false)
        .map_err(|e| YamlError {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.root.unwrap_or(Node::new(1, Value::Null)))
}

/// A collection being read.
enum Frame {
    Seq(Node, usize, Vec<Node>),
    /// The mapping node, its anchor, its keys and values in order (merge
    /// keys included), and the key waiting for its value.
    Map(Node, usize, Vec<(Node, Node)>, Option<Node>),
}

struct Builder {
    dialect: Dialect,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<YamlError>,
}

/// The tag a merge key carries here (a plain `<<`).
const MERGE: &str = "tag:yaml.org,2002:merge";

fn tag_name(tag: Option<Tag>) -> Option<String> {
    tag.map(|t| match t.handle.as_str() {
        "!" => t.suffix,
        _ => format!("{}{}", t.handle, t.suffix),
    })
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == TScalarStyle::Plain && tag.is_none();
                let mut node = Node::new(line, Value::Scalar(text));
                node.tag = tag_name(tag);
                if plain {
                    match node.as_str() {
                        Some("" | "~" | "null" | "Null" | "NULL") => node.value = Value::Null,
                        Some("<<") => node.tag = Some(MERGE.into()),
                        _ => {}
                    }
                }
                self.finish(node, anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let node = node.clone();
                    self.add(node);
                }
                None => self.fail(line, "an alias to an unknown anchor".into()),
            },
            Event::SequenceStart(anchor, tag) => {
                let mut node = Node::new(line, Value::Null);
                node.tag = tag_name(tag);
                self.stack.push(Frame::Seq(node, anchor, Vec::new()));
            }
            Event::MappingStart(anchor, tag) => {
                let mut node = Node::new(line, Value::Null);
                node.tag = tag_name(tag);
                self.stack.push(Frame::Map(node, anchor, Vec::new(), None));
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(mut node, anchor, items)) = self.stack.pop() {
                    node.value = Value::Seq(items);
                    self.finish(node, anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(mut node, anchor, pairs, _)) = self.stack.pop() {
                    match build_map(self.dialect, pairs) {
                        Ok(entries) => {
                            node.value = Value::Map(entries);
                            self.finish(node, anchor);
                        }
                        Err(e) => self.error = Some(e),
                    }
                }
            }
            _ => {}
        }
    }
}

impl Builder {
    fn fail(&mut self, line: usize, message: String) {
        self.error = Some(YamlError { line, message });
    }

    /// A complete node: remember its anchor, hand it to its parent.
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.add(node);
    }

    fn add(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, pairs, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => pairs.push((key, node)),
            },
        }
    }
}

/// A mapping's entries from its pairs, merges and repeated keys applied as
/// `dialect` does.
fn build_map(dialect: Dialect, pairs: Vec<(Node, Node)>) -> Result<Vec<Entry>, YamlError> {
    let mut out: Vec<Entry> = Vec::new();
    // Keys written in the mapping itself (MergeSpec: they win over merges).
    let own: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k.tag.as_deref() != Some(MERGE))
        .filter_map(|(k, _)| key_text(k).ok())
        .collect();
    for (key, value) in pairs {
        if key.tag.as_deref() == Some(MERGE) {
            for entry in merged(&value)? {
                let at = out.iter().position(|e| e.key == entry.key);
                match (dialect, at) {
                    (Dialect::Sequential, Some(i)) => out[i].value = entry.value,
                    (Dialect::Sequential, None) => out.push(entry),
                    (_, None) if !own.contains(&entry.key) => out.push(entry),
                    _ => {}
                }
            }
            continue;
        }
        let text = key_text(&key)?;
        let entry = Entry {
            key: text,
            line: key.line,
            value,
        };
        let at = match dialect {
            Dialect::Strict => out
                .iter()
                .position(|e| e.key.eq_ignore_ascii_case(&entry.key)),
            _ => out.iter().position(|e| e.key == entry.key),
        };
        match (dialect, at) {
            (_, None) => out.push(entry),
            (Dialect::Strict, Some(i)) if own_count(&own, &entry.key) > 1 => {
                return Err(YamlError {
                    line: entry.line,
                    message: format!(
                        "key {:?} is written twice in one mapping (first at line {}), \
                         which GitHub Actions refuses",
                        entry.key, out[i].line
                    ),
                })
            }
            (_, Some(i)) => out[i] = entry,
        }
    }
    Ok(out)
}

fn own_count(own: &[String], key: &str) -> usize {
    own.iter().filter(|k| k.eq_ignore_ascii_case(key)).count()
}

/// The entries a `<<` value brings: a mapping's, or a list of mappings'
/// (an earlier one winning over a later one).
fn merged(value: &Node) -> Result<Vec<Entry>, YamlError> {
    match &value.value {
        Value::Map(entries) => Ok(entries.clone()),
        Value::Seq(items) => {
            let mut out: Vec<Entry> = Vec::new();
            for item in items {
                let Some(entries) = item.entries() else {
                    return Err(not_mergeable(item));
                };
                for e in entries {
                    if !out.iter().any(|o| o.key == e.key) {
                        out.push(e.clone());
                    }
                }
            }
            Ok(out)
        }
        _ => Err(not_mergeable(value)),
    }
}

fn not_mergeable(node: &Node) -> YamlError {
    YamlError {
        line: node.line,
        message: "a `<<` merge key needs a mapping or a list of mappings".into(),
    }
}

fn key_text(key: &Node) -> Result<String, YamlError> {
    match &key.value {
        Value::Scalar(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err(YamlError {
            line: key.line,
            message: "a mapping key that is not a scalar".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: &Node) -> Vec<(&str, &str)> {
        n.entries()
            .unwrap()
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str().unwrap_or("~")))
            .collect()
    }

    #[test]
    fn several_merge_keys_and_repeated_keys_as_each_ci_reads_them() {
        let text = "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nj:\n  x: 0\n  <<: *a\n  <<: *b\n  z: 3\n  z: 4\n";
        let psych = load(text, Dialect::Sequential).unwrap();
        assert_eq!(
            keys(psych.get("j").unwrap()),
            [("x", "1"), ("y", "2"), ("z", "4")]
        );
        let spec = load(text, Dialect::MergeSpec).unwrap();
        assert_eq!(
            keys(spec.get("j").unwrap()),
            [("x", "0"), ("y", "1"), ("z", "4")]
        );
        let e = load(text, Dialect::Strict).unwrap_err();
        assert_eq!(e.line, 8, "{e:?}");
        assert!(e.message.contains("first at line 7"), "{e:?}");
        // A list of merges: the earlier wins.
        let list = load(
            "a: &a {x: 1}\nb: &b {x: 2}\nj:\n  <<: [*a, *b]\n",
            Dialect::Sequential,
        );
        assert_eq!(keys(list.unwrap().get("j").unwrap()), [("x", "1")]);
        // GitHub compares keys without case.
        assert!(load("jobs:\n  build: {}\n  Build: {}\n", Dialect::Strict).is_err());
    }

    #[test]
    fn lines_tags_and_nulls() {
        let n = load(
            "a: 1\nb:\n  - !reference [.t, script]\n  - ~\nc: \"<<\"\n",
            Dialect::Sequential,
        )
        .unwrap();
        let b = n.get("b").unwrap().items().unwrap();
        assert_eq!(b[0].tag.as_deref(), Some("reference"));
        assert_eq!(b[0].line, 3);
        assert!(b[1].is_null());
        assert_eq!(n.entries().unwrap()[2].line, 5);
        assert_eq!(n.get("c").unwrap().as_str(), Some("<<"));
        let e = load("a: [1\n", Dialect::Sequential).unwrap_err();
        assert!(e.line >= 1 && !e.message.is_empty());
    }
}
