//! The chunk lookup of a `strata serve` store: the server answers batch
//! queries (`protocol::route::MISSING`, `LOCATE`) from its own index, so a
//! client keeps none. Over `backend::http`'s transport; the bodies are
//! `protocol`'s, the location records `format::index`'s.

use crate::backend::http::HttpTransport;
use crate::error::{Error, Result};
use crate::format::index::{IndexObject, Location, LOCATION_LEN};
use crate::format::pack::FrameEntry;
use crate::id::{ChunkId, IndexId, PackId};
use crate::lookup::ChunkLookup;
use crate::protocol::{
    decode_located, decode_missing, encode_ids, route, StatsCount, MAX_QUERY_IDS,
};

/// How many chunk queries a persist keeps in flight. Each holds a batch
/// of chunks (up to 4 MiB, persist's `BATCHES_HELD` bounds them all)
/// until its answer comes back: about 14 x 4 MiB per 50 ms round trip is
/// more than two cores chunk and hash.
const QUERIES_IN_FLIGHT: usize = 16;

/// Chunk queries answered by a server.
#[derive(Debug, Clone)]
pub struct RemoteLookup {
    transport: HttpTransport,
}

impl RemoteLookup {
    /// Queries through `transport`.
    pub fn new(transport: HttpTransport) -> Self {
        Self { transport }
    }

    fn query(&self, route: &str, ids: &[ChunkId]) -> Result<Vec<u8>> {
        let r = self.transport.call("POST", route, Some(&encode_ids(ids)))?;
        self.transport.expect_ok(r, route)
    }

    /// Asks `route` about `ids` in parts of at most `MAX_QUERY_IDS`, all at
    /// once (one round trip however many parts), decoding each answer.
    fn in_parts<T: Send>(
        &self,
        route: &str,
        ids: &[ChunkId],
        decode: impl Fn(&[ChunkId], Vec<u8>) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        if ids.len() <= MAX_QUERY_IDS {
            return Ok(vec![decode(ids, self.query(route, ids)?)?]);
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .chunks(MAX_QUERY_IDS)
                .map(|part| {
                    let decode = &decode;
                    s.spawn(move || decode(part, self.query(route, part)?))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a chunk query panicked"))
                .collect()
        })
    }

    fn bad_answer(&self, route: &str, detail: String) -> Error {
        Error::Remote {
            server: self.transport.location_string(),
            detail: format!("{route}: {detail}"),
        }
    }
}

impl ChunkLookup for RemoteLookup {
    fn missing(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let parts = self.in_parts(route::MISSING, ids, |part, answer| {
            decode_missing(part.len(), &answer).map_err(|e| self.bad_answer(route::MISSING, e))
        })?;
        Ok(parts.into_iter().flatten().collect())
    }

    fn locate(&self, ids: &[ChunkId]) -> Result<Vec<Option<Location>>> {
        let parts = self.in_parts(route::LOCATE, ids, |part, answer| {
            let records = decode_located::<LOCATION_LEN>(part.len(), &answer)
                .map_err(|e| self.bad_answer(route::LOCATE, e))?;
            part.iter()
                .zip(records)
                .map(|(id, record)| {
                    record
                        .map(|r| {
                            Location::from_bytes(*id, &r)
                                .map_err(|e| self.bad_answer(route::LOCATE, e.to_string()))
                        })
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// The server indexes a pack when it receives it.
    fn add_pack(&self, _pack: &PackId, _frames: &[FrameEntry]) -> Result<()> {
        Ok(())
    }

    /// The server indexes an index object when it receives it.
    fn add(&self, _id: &IndexId, _object: &IndexObject) -> Result<()> {
        Ok(())
    }

    /// Each query waits a round trip: enough in flight that the chunking
    /// never waits on them (`QUERIES_IN_FLIGHT`).
    fn in_flight(&self) -> usize {
        QUERIES_IN_FLIGHT
    }

    fn count(&self) -> Result<u64> {
        let stats: StatsCount = self.transport.call_json("GET", route::STATS)?;
        Ok(stats.chunks)
    }
}
