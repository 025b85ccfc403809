//! Message compression shared by the HTTP protocols: gRPC's `grpc-encoding`, Connect's
//! `content-encoding` (unary) and `connect-content-encoding` (streams), gRPC-Web's too.

use std::io::{Read, Write};

use bytes::Bytes;
use http::HeaderValue;

use crate::Status;

/// The encodings Ferry reads and writes, as a header value lists them (most preferred first).
pub(crate) const SUPPORTED: &str = "gzip,identity";

/// Replies smaller than this are not worth compressing.
pub(crate) const MIN_COMPRESS: usize = 1024;

/// How a message or body is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    Identity,
    Gzip,
}

impl Compression {
    /// The encoding a header names; absent means identity. An encoding Ferry does not speak
    /// is `UNIMPLEMENTED`, naming the ones it does.
    pub(crate) fn from_header(value: Option<&HeaderValue>) -> Result<Compression, Status> {
        match value {
            None => Ok(Compression::Identity),
            Some(value) => Compression::from_name(value.as_bytes()),
        }
    }

    /// The encoding called `name`.
    pub(crate) fn from_name(name: &[u8]) -> Result<Compression, Status> {
        match name.trim_ascii() {
            b"" | b"identity" => Ok(Compression::Identity),
            b"gzip" => Ok(Compression::Gzip),
            other => Err(Status::unimplemented(format!(
                "compression {:?} is not supported; use one of {SUPPORTED}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// The token for headers.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Gzip => "gzip",
        }
    }

    /// The best encoding both sides speak, from an `accept-encoding`-style list (ordered, most
    /// preferred first; quality values are ignored except `q=0`).
    pub(crate) fn negotiate(accept: Option<&HeaderValue>) -> Compression {
        let Some(list) = accept.and_then(|v| v.to_str().ok()) else {
            return Compression::Identity;
        };
        for entry in list.split(',') {
            let mut parts = entry.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            if name == "gzip" && !refused {
                return Compression::Gzip;
            }
        }
        Compression::Identity
    }

    /// `data` compressed.
    pub(crate) fn compress(self, data: &[u8]) -> Bytes {
        match self {
            Compression::Identity => Bytes::copy_from_slice(data),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                // Writing to a Vec cannot fail.
                let _ = gz.write_all(data);
                Bytes::from(gz.finish().unwrap_or_default())
            }
        }
    }

    /// `data` decompressed, refusing more than `limit` bytes of output (a decompression bomb
    /// fails only its call). Empty input stays empty.
    pub(crate) fn decompress(self, data: Bytes, limit: usize) -> Result<Bytes, Status> {
        if self == Compression::Identity || data.is_empty() {
            return Ok(data);
        }
        let mut out = Vec::new();
        let read = flate2::read::GzDecoder::new(&data[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Status::invalid_argument(format!("cannot gunzip the message: {e}")))?;
        if read > limit {
            return Err(Status::resource_exhausted(format!(
                "decompressed message is larger than the limit of {limit} bytes"
            )));
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips_and_bombs_fail() {
        let data = vec![b'a'; 10_000];
        let packed = Compression::Gzip.compress(&data);
        assert!(packed.len() < 200);
        assert_eq!(
            Compression::Gzip
                .decompress(packed.clone(), 10_000)
                .unwrap(),
            data
        );
        let err = Compression::Gzip.decompress(packed, 9_999).unwrap_err();
        assert_eq!(err.code(), crate::Code::ResourceExhausted);
    }

    #[test]
    fn names_and_negotiation() {
        assert_eq!(Compression::from_name(b"gzip").unwrap(), Compression::Gzip);
        let err = Compression::from_name(b"snappy").unwrap_err();
        assert_eq!(err.code(), crate::Code::Unimplemented);
        assert!(err.message().contains("\"snappy\""), "{err}");
        let header = |s: &'static str| Some(HeaderValue::from_static(s));
        assert_eq!(
            Compression::negotiate(header("br, gzip").as_ref()),
            Compression::Gzip
        );
        assert_eq!(
            Compression::negotiate(header("gzip;q=0, identity").as_ref()),
            Compression::Identity
        );
        assert_eq!(Compression::negotiate(None), Compression::Identity);
    }
}
