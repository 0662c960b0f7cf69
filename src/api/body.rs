//! Request bodies: bounded before they are read, and read before the answer.
//!
//! # Design constraints
//! - **Bounded before read.** A body whose `Content-Length` is over the
//!   limit of its route is refused (413) without reading a byte of it; one
//!   sent without a length (chunked) is cut off as soon as it passes the
//!   limit. Every 413 is JSON, like every other error.
//! - **Bounded in total.** What all requests hold in memory at once is
//!   bounded by one [`BodyBudget`] (`max_body_memory`, default
//!   [`crate::config::DEFAULT_BODY_MEMORY`]): a body takes its share before it is read (its
//!   length, or [`UNKNOWN_LENGTH_SHARE`] to begin with when it has none, and
//!   more as it grows) and gives it back when the request is answered. A
//!   request that cannot get its share within [`WAIT_FOR_SHARE`] is answered
//!   503 with `Retry-After`. So however many callers send however large
//!   bodies, with or without a token, memory grows by at most the budget.
//! - **Read before the answer.** Every `/api/v1` request's body is read
//!   (within [`API_MAX_BODY`]) before its handler runs ([`read_first`]):
//!   an answer sent while the client is still sending would close the
//!   connection under it, and the client would see a reset for a request
//!   that was carried out.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// The largest body of an `/api/v1` request: they carry a reason, a token
/// or credentials, never data.
pub const API_MAX_BODY: usize = 64 * 1024;

/// The share a body without `Content-Length` takes before its first byte
/// is read; it takes more as it grows (doubling, up to its limit).
pub const UNKNOWN_LENGTH_SHARE: usize = 64 * 1024;

/// How long a request waits for its share before it is answered 503.
pub const WAIT_FOR_SHARE: Duration = Duration::from_secs(2);

/// The memory all request bodies being read may take at once.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    /// One permit a byte.
    bytes: Arc<Semaphore>,
    total: usize,
}

/// A body read whole, holding its share of the budget until dropped.
#[derive(Debug)]
pub struct ReadBody {
    pub bytes: Bytes,
    _share: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `total` bytes (at most `u32::MAX`).
    pub fn new(total: usize) -> BodyBudget {
        let total = total.clamp(1, u32::MAX as usize);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes not taken by a body being read right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Reads `body` whole, refusing it (413) once it is longer than
    /// `limit` — from its `Content-Length` before reading, or as soon as
    /// it passes the limit. `what` names the receiver in the messages
    /// ("this webhook").
    pub async fn read(
        &self,
        headers: &HeaderMap,
        body: Body,
        limit: usize,
        what: &str,
    ) -> Result<ReadBody, ApiError> {
        let length = declared_length(headers)?;
        if let Some(n) = length.filter(|n| *n > limit) {
            return Err(too_large(what, limit, &format!("has {n} bytes")));
        }
        if length == Some(0) || (length.is_none() && body.is_end_stream()) {
            return Ok(ReadBody {
                bytes: Bytes::new(),
                _share: None,
            });
        }
        let mut reserved = length
            .unwrap_or(UNKNOWN_LENGTH_SHARE.min(limit))
            .min(self.total);
        let mut share = self.take(reserved).await?;
        let mut bytes: Vec<u8> = Vec::with_capacity(reserved);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest(format!("the body could not be read to its end: {e}"))
            })?;
            let needed = bytes.len() + chunk.len();
            if needed > limit {
                return Err(too_large(what, limit, "is longer"));
            }
            if needed > reserved {
                // Grow by doubling, never past the limit: few, bounded
                // steps, each paid for before the memory is taken.
                let grown = needed.max(reserved.saturating_mul(2)).min(limit);
                let more = u32::try_from(grown - reserved).map_err(|_| busy())?;
                let extra = self
                    .bytes
                    .clone()
                    .try_acquire_many_owned(more)
                    .map_err(|_| busy())?;
                share.merge(extra);
                bytes.reserve_exact(grown - bytes.len());
                reserved = grown;
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(ReadBody {
            bytes: Bytes::from(bytes),
            _share: Some(share),
        })
    }

    async fn take(&self, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = u32::try_from(n).map_err(|_| busy())?;
        match tokio::time::timeout(WAIT_FOR_SHARE, self.bytes.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy()),
        }
    }
}

/// `Content-Length`, if the request gives one; a malformed one is a 400.
fn declared_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
        .ok_or_else(|| ApiError::BadRequest("Content-Length is not a number".into()))
}

fn too_large(what: &str, limit: usize, how: &str) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the body {how}; {what} takes at most {limit} bytes"
    ))
}

fn busy() -> ApiError {
    ApiError::Unavailable {
        message: "too many request bodies are being read at once; try again shortly".into(),
        retry_after: Duration::from_secs(1),
    }
}

/// The layer on `/api/v1`: reads the body whole (at most [`API_MAX_BODY`])
/// before the request goes on, so every answer comes after the client has
/// finished sending.
pub async fn read_first(
    State(budget): State<BodyBudget>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = match budget
        .read(&parts.headers, body, API_MAX_BODY, "the API")
        .await
    {
        Ok(read) => read,
        Err(e) => return e.into_response(),
    };
    let ReadBody { bytes, _share } = read;
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(_share);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(length: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = length {
            h.insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
        }
        h
    }

    /// A body sent in pieces without a length, as a chunked request is.
    fn chunked(pieces: usize, size: usize) -> Body {
        let chunks =
            (0..pieces).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; size])));
        Body::from_stream(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let budget = BodyBudget::new(1024);
        // A body that would fail if it were read at all.
        let poison = Body::from_stream(futures_util::stream::once(async {
            Err::<Bytes, _>(std::io::Error::other("read"))
        }));
        match budget
            .read(&headers(Some(100_000_000)), poison, 1000, "it")
            .await
        {
            Err(ApiError::PayloadTooLarge(m)) => assert!(m.contains("100000000"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(budget.available(), 1024);
    }

    #[tokio::test]
    async fn a_chunked_body_is_cut_off_once_past_the_limit_and_its_share_given_back() {
        let budget = BodyBudget::new(1 << 20);
        let r = budget
            .read(&headers(None), chunked(100, 1000), 10_000, "it")
            .await;
        assert!(matches!(r, Err(ApiError::PayloadTooLarge(_))), "{r:?}");
        assert_eq!(budget.available(), 1 << 20);
        let ok = budget
            .read(&headers(None), chunked(10, 1000), 10_000, "it")
            .await
            .unwrap();
        assert_eq!(ok.bytes.len(), 10_000);
        assert!(budget.available() <= (1 << 20) - 10_000);
        drop(ok);
        assert_eq!(budget.available(), 1 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_budget_a_request_waits_then_is_told_to_retry() {
        let budget = BodyBudget::new(10_000);
        let held = budget
            .read(
                &headers(Some(8000)),
                Body::from(vec![0u8; 8000]),
                8000,
                "it",
            )
            .await
            .unwrap();
        match budget
            .read(
                &headers(Some(5000)),
                Body::from(vec![0u8; 5000]),
                8000,
                "it",
            )
            .await
        {
            Err(ApiError::Unavailable { retry_after, .. }) => assert!(!retry_after.is_zero()),
            other => panic!("{other:?}"),
        }
        // Chunked growth past the budget is refused at once, not waited for.
        let r = budget
            .read(&headers(None), chunked(4, 1000), 8000, "it")
            .await;
        assert!(matches!(r, Err(ApiError::Unavailable { .. })), "{r:?}");
        drop(held);
        assert!(budget
            .read(
                &headers(Some(5000)),
                Body::from(vec![0u8; 5000]),
                8000,
                "it"
            )
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn an_empty_body_takes_nothing() {
        let budget = BodyBudget::new(10);
        let r = budget
            .read(&headers(None), Body::empty(), 5, "it")
            .await
            .unwrap();
        assert!(r.bytes.is_empty());
        assert_eq!(budget.available(), 10);
    }
}
