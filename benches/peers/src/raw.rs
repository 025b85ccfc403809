//! The raw TCP ceiling: length-prefixed echo with no RPC layer at all.
//!
//! Frames are a big-endian `u32` length and the payload. The server echoes every complete frame
//! it has read, all of them in one `write`; the client keeps `concurrency` frames in flight on
//! the connection (pipelined, batched writes), which at concurrency 1 is plain ping-pong.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::load::{self, MEASURE, Measured, STOP, WARMUP};

pub async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = echo(stream).await;
        });
    }
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = BytesMut::with_capacity(128 * 1024);
    let mut output = BytesMut::with_capacity(128 * 1024);
    loop {
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        while input.len() >= 4 {
            let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
            if input.len() < 4 + len {
                input.reserve(4 + len);
                break;
            }
            output.extend_from_slice(&input[..4 + len]);
            input.advance(4 + len);
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if input.capacity() - input.len() < 16 * 1024 {
            input.reserve(64 * 1024);
        }
    }
}

pub async fn client(args: crate::ClientArgs) -> Result<Measured, String> {
    let crate::ClientArgs {
        addr,
        size,
        concurrency,
        warmup,
        window,
    } = args;
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let phase = AtomicU8::new(WARMUP);
    let (driven, window) = tokio::join!(drive(stream, size, concurrency, &phase), async {
        load::run_window(&phase, warmup, window).await
    });
    let (calls, hist) = driven.map_err(|e| e.to_string())?;
    Ok(load::summarize(calls, window, &hist))
}

async fn drive(
    mut stream: TcpStream,
    size: usize,
    concurrency: usize,
    phase: &AtomicU8,
) -> std::io::Result<(u64, hdrhistogram::Histogram<u64>)> {
    let payload = vec![0xabu8; size];
    let mut hist = load::histogram();
    let mut calls = 0u64;
    // Send time and the phase at send time of each frame in flight, oldest first.
    let mut in_flight: VecDeque<(Instant, u8)> = VecDeque::with_capacity(concurrency);
    let mut input = BytesMut::with_capacity(128 * 1024);
    let mut output = BytesMut::with_capacity(concurrency * (size + 4));
    let now = Instant::now();
    for _ in 0..concurrency {
        output.put_u32(size as u32);
        output.extend_from_slice(&payload);
        in_flight.push_back((now, WARMUP));
    }
    stream.write_all(&output).await?;
    output.clear();
    while !in_flight.is_empty() {
        if stream.read_buf(&mut input).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let current = phase.load(Ordering::Relaxed);
        let now = Instant::now();
        while input.len() >= 4 {
            let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
            if input.len() < 4 + len {
                input.reserve(4 + len);
                break;
            }
            if len != size {
                return Err(std::io::Error::other("echo of the wrong size"));
            }
            input.advance(4 + len);
            let (sent, sent_phase) = in_flight.pop_front().expect("a reply matches a request");
            if sent_phase == MEASURE && current == MEASURE {
                load::record(&mut hist, now - sent);
                calls += 1;
            }
            if current != STOP {
                output.put_u32(size as u32);
                output.extend_from_slice(&payload);
                in_flight.push_back((now, current));
            }
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
        if input.capacity() - input.len() < 16 * 1024 {
            input.reserve(64 * 1024);
        }
    }
    Ok((calls, hist))
}
