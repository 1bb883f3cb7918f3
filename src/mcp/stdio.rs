//! stdio framing with a bound on line length.
//!
//! rmcp reads newline-delimited JSON-RPC and silently drops a line over its own (16 MiB) cap. We
//! put a pump in front of it: stdin is read in chunks, a line longer than `max_line_bytes` is never
//! buffered whole (its bytes are dropped as they arrive) and is answered with a JSON-RPC error
//! (`id: null`, -32600); the session goes on with the next line. The answer is written between
//! rmcp's own messages, never inside one, by a second pump in front of stdout.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The default for `[stdio] max_line_bytes`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// Pipes between the real streams and rmcp; rmcp reads `reader` and writes `writer`.
pub struct BoundedStdio {
    pub reader: DuplexStream,
    pub writer: DuplexStream,
    /// Finishes once everything rmcp wrote has reached the output.
    pub flushed: JoinHandle<()>,
}

pub fn bounded<R, W>(input: R, output: W, max_line_bytes: usize) -> BoundedStdio
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, reader) = tokio::io::duplex(64 * 1024);
    let (writer, from_rmcp) = tokio::io::duplex(64 * 1024);
    let (errors_tx, errors_rx) = mpsc::channel(16);
    tokio::spawn(pump_input(input, to_rmcp, errors_tx, max_line_bytes));
    let flushed = tokio::spawn(pump_output(from_rmcp, output, errors_rx));
    BoundedStdio {
        reader,
        writer,
        flushed,
    }
}

fn too_long(max: usize) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32600,
            "message": format!("message too large: a line may be at most {max} bytes; it was skipped"),
        }
    })
    .to_string()
}

async fn pump_input<R: AsyncRead + Unpin>(
    input: R,
    mut to_rmcp: DuplexStream,
    errors: mpsc::Sender<String>,
    max: usize,
) {
    let mut input = BufReader::new(input);
    let mut line: Vec<u8> = Vec::new();
    let mut discarding = false;
    loop {
        let (take, complete) = {
            let chunk = match input.fill_buf().await {
                Ok([]) => break,
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "stdin read failed");
                    break;
                }
            };
            let newline = chunk.iter().position(|b| *b == b'\n');
            let take = newline.map_or(chunk.len(), |i| i + 1);
            let content = line.len() + newline.unwrap_or(chunk.len());
            if discarding {
                // Dropping the rest of a line already answered.
                discarding = newline.is_none();
                (take, false)
            } else if content > max {
                tracing::warn!(max, "skipped an stdin line over the length limit");
                line.clear();
                discarding = newline.is_none();
                if errors.send(too_long(max)).await.is_err() {
                    break;
                }
                (take, false)
            } else {
                line.extend_from_slice(&chunk[..take]);
                (take, newline.is_some())
            }
        };
        input.consume(take);
        if complete {
            if to_rmcp.write_all(&line).await.is_err() {
                break;
            }
            line.clear();
        }
    }
    // A trailing line without a newline is passed on; rmcp decides what it is.
    if !discarding && !line.is_empty() {
        let _ = to_rmcp.write_all(&line).await;
    }
    let _ = to_rmcp.shutdown().await;
}

async fn pump_output<W: AsyncWrite + Unpin>(
    from_rmcp: DuplexStream,
    mut output: W,
    mut errors: mpsc::Receiver<String>,
) {
    let mut from_rmcp = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    let mut errors_open = true;
    loop {
        tokio::select! {
            // rmcp's output is trusted and newline-framed: whole messages only.
            read = from_rmcp.read_until(b'\n', &mut line) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                }
            }
            err = errors.recv(), if errors_open => match err {
                Some(msg) => {
                    let framed = format!("{msg}\n");
                    if output.write_all(framed.as_bytes()).await.is_err() || output.flush().await.is_err() {
                        return;
                    }
                }
                None => errors_open = false,
            },
        }
    }
    let _ = output.flush().await;
}
