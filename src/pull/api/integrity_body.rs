//! The integrity quote's JSON body. The IMA list can be megabytes, so a
//! large one is streamed from the log file straight into the response,
//! JSON-escaped on the way, instead of being built in memory.

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value};

use std::sync::{Arc, Mutex};

use crate::evidence::{escape_json_into, ImaSlice, SliceReader};

/// IMA slices up to this size are sent in one piece (one sized body, few
/// TLS records); larger ones are streamed.
const INLINE_LIMIT: u64 = 256 * 1024;
/// Raw bytes per streamed chunk.
const STREAM_CHUNK: usize = 512 * 1024;
/// Escaped-chunk buffers kept for reuse (one being escaped, one or two
/// queued in the response, one being written), and the largest one kept: the
/// allocator then never sees a megabyte freed on one thread and asked for
/// on another, which made its per-thread arenas grow with every full log.
const POOLED_BUFFERS: usize = 4;
const POOLED_CAPACITY: usize = 2 * STREAM_CHUNK;

/// The escaped-chunk buffers of one server, shared by its workers.
#[derive(Debug, Clone, Default)]
pub struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufferPool {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default()
    }

    fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > POOLED_CAPACITY {
            return;
        }
        buffer.clear();
        if let Ok(mut pool) = self.0.lock() {
            if pool.len() < POOLED_BUFFERS {
                pool.push(buffer);
            }
        }
    }
}

/// An escaped chunk on its way out; its buffer returns to the pool when
/// the response has written it.
struct Pooled(Vec<u8>, BufferPool);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.1.give_back(std::mem::take(&mut self.0));
    }
}

/// What one blocking step yields: the raw bytes read (0 at the end), the
/// escaped chunk, and the reader and raw buffer for the next step.
type Chunk = (usize, Bytes, SliceReader, Vec<u8>);

/// Starts reading and escaping the next chunk on the blocking pool.
fn next_chunk(
    mut reader: SliceReader,
    mut raw: Vec<u8>,
    pool: BufferPool,
) -> tokio::task::JoinHandle<std::io::Result<Chunk>> {
    tokio::task::spawn_blocking(move || {
        let n = reader.read_chunk(&mut raw, STREAM_CHUNK)?;
        let mut escaped = pool.take();
        escape_json_into(&mut escaped, &raw[..n]);
        Ok((n, Bytes::from_owner(Pooled(escaped, pool)), reader, raw))
    })
}

/// Builds the 200 response: `results` plus, when present, the IMA list.
pub async fn respond(
    mut results: Map<String, Value>,
    ima: Option<ImaSlice>,
    pool: &BufferPool,
) -> std::io::Result<HttpResponse> {
    let Some(ima) = ima else {
        return Ok(super::error::success(results));
    };
    results.insert("ima_measurement_list_entry".into(), json!(ima.entry));
    if ima.len <= INLINE_LIMIT {
        let text = ima.read_all().await?;
        results.insert(
            "ima_measurement_list".into(),
            Value::String(String::from_utf8_lossy(&text).into_owned()),
        );
        return Ok(super::error::success(results));
    }
    let head = super::error::streamed_success_head(&results, "ima_measurement_list")?;
    let reader = {
        let ima = ima.clone();
        tokio::task::spawn_blocking(move || ima.open_blocking())
            .await
            .map_err(std::io::Error::other)??
    };
    // Each chunk is read and escaped in one blocking step, and the next
    // step starts as soon as a chunk is handed to the response: chunk k+1
    // is escaped on one core while chunk k is encrypted and written on the
    // other. No thread waits on a slow client: a step only ever reads and
    // escapes. The raw buffer is reused; the escaped ones come from the
    // pool.
    let first = next_chunk(reader, Vec::new(), pool.clone());
    let pool = pool.clone();
    let body = stream::unfold(Some(first), move |state| {
        let pool = pool.clone();
        async move {
            let step = state?.await.map_err(std::io::Error::other);
            match step {
                Ok(Ok((0, ..))) => None,
                Ok(Ok((_, bytes, reader, raw))) => {
                    Some((Ok(bytes), Some(next_chunk(reader, raw, pool))))
                }
                Ok(Err(e)) | Err(e) => Some((Err(e), None)),
            }
        }
    });
    let stream = stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(body)
        .chain(stream::once(async {
            Ok(Bytes::from_static(super::error::STREAMED_TAIL))
        }));
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(stream))
}
