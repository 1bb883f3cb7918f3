//! stdio framing with a bound on line length.
//!
//! rmcp reads newline-delimited JSON-RPC and silently drops a line over its own (16 MiB) cap. We
//! put a pump in front of it: stdin is read in chunks, a line longer than `max_line_bytes` is never
//! buffered whole (its bytes are dropped as they arrive) and is answered with a JSON-RPC error
//! (`id: null`, -32600); the session goes on with the next line. The answer is written between
//! rmcp's own messages, never inside one, by a second pump in front of stdout. A plain tool
//! call is answered by the gate without rmcp (`mcp::direct::Stdio`), its answer written the
//! same way. On Linux the pipe on stdout is widened first ([`widen_output_pipe`]).

use super::direct;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The default for `[stdio] max_line_bytes`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// Plain tool calls answered beside rmcp at once, at most (each holds a place for its answer).
const ANSWERS_IN_FLIGHT: usize = 128;

/// Answers ready together are written together, up to about this many bytes in one write.
const BATCH_BYTES: usize = 256 * 1024;

/// The most answers one write takes: one `writev` buffer each, well below the kernel's 1,024.
const BATCH_ANSWERS: usize = 64;

/// The capacities asked of the pipe on stdout, in turn: Linux's default limit for a user's pipe
/// (`/proc/sys/fs/pipe-max-size`), then one batch of answers ([`BATCH_BYTES`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const OUTPUT_PIPE_BYTES: [libc::c_int; 2] = [1 << 20, 256 * 1024];

/// Widens the pipe on stdout, if it is one, from Linux's 64 kB, so that the answers ready
/// together leave in one write. Ten of the read tool's ten-task answers fill 64 kB: a batch at
/// W = 32 took several writes, each waking the client again (3.4 `writev`s and 2.3 context
/// switches for every ten calls, against 0.8 and 1.1 with 1 MB). Nothing changes if stdout is
/// not a pipe, or the system allows neither size.
pub fn widen_output_pipe() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::fd::AsRawFd;
        let fd = std::io::stdout().as_raw_fd();
        let widened = OUTPUT_PIPE_BYTES.iter().find_map(|&bytes| {
            // SAFETY: F_SETPIPE_SZ takes an integer and touches no memory of ours; on a
            // descriptor that is not a pipe it fails with EBADF and changes nothing.
            let size = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes) };
            (size >= 0).then_some(size)
        });
        tracing::debug!(?widened, "stdout pipe capacity");
    }
}

/// Pipes between the real streams and rmcp; rmcp reads `reader` and writes `writer`.
pub struct BoundedStdio {
    pub reader: DuplexStream,
    pub writer: DuplexStream,
    /// Finishes once everything rmcp wrote, and every call answered beside it, has reached the
    /// output.
    pub flushed: JoinHandle<()>,
}

/// Pumps between `input`, `output` and rmcp; `direct`, if given, answers plain tool calls.
pub fn bounded<R, W>(
    input: R,
    output: W,
    max_line_bytes: usize,
    direct: Option<direct::Stdio>,
) -> BoundedStdio
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (to_rmcp, reader) = tokio::io::duplex(64 * 1024);
    let (writer, from_rmcp) = tokio::io::duplex(64 * 1024);
    let (answers_tx, answers_rx) = mpsc::channel(ANSWERS_IN_FLIGHT);
    // Once rmcp has stopped, no line is read or answered any more.
    let rmcp_done = CancellationToken::new();
    let lines = Lines {
        to_rmcp,
        answers: answers_tx,
        direct,
    };
    tokio::spawn(rmcp_done.clone().run_until_cancelled_owned(pump_input(
        input,
        lines,
        max_line_bytes,
    )));
    let flushed = tokio::spawn(pump_output(from_rmcp, output, answers_rx, rmcp_done));
    BoundedStdio {
        reader,
        writer,
        flushed,
    }
}

fn too_long(max: usize) -> Bytes {
    let mut line = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32600,
            "message": format!("message too large: a line may be at most {max} bytes; it was skipped"),
        }
    }))
    .expect("errors serialise");
    line.push(b'\n');
    line.into()
}

/// Where a complete line goes: to rmcp, or to `direct`, whose answer (like a refusal of an
/// overlong line) goes to the output pump through `answers`.
struct Lines {
    to_rmcp: DuplexStream,
    answers: mpsc::Sender<Bytes>,
    direct: Option<direct::Stdio>,
}

impl Lines {
    /// `false` once rmcp is gone.
    async fn pass(&mut self, line: &[u8]) -> bool {
        let call = self.direct.as_mut().and_then(|d| d.take(line));
        match call {
            Some(call) => {
                // A place for the answer first: with the output slow to drain, calls wait here
                // and stdin is read no further, as rmcp stops reading when its output is full.
                let Ok(slot) = self.answers.clone().reserve_owned().await else {
                    return false;
                };
                tokio::spawn(async move {
                    slot.send(call.await);
                });
                true
            }
            None => self.to_rmcp.write_all(line).await.is_ok(),
        }
    }
}

async fn pump_input<R: AsyncRead + Unpin>(input: R, mut lines: Lines, max: usize) {
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
                if lines.answers.send(too_long(max)).await.is_err() {
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
            if !lines.pass(&line).await {
                break;
            }
            line.clear();
        }
    }
    // A trailing line without a newline is passed on; rmcp decides what it is.
    if !discarding && !line.is_empty() {
        let _ = lines.to_rmcp.write_all(&line).await;
    }
    let _ = lines.to_rmcp.shutdown().await;
}

/// Writes rmcp's messages and the answers made beside it, each whole, until rmcp has ended
/// (then `rmcp_done` stops the input) and every answer still on its way has been written.
async fn pump_output<W: AsyncWrite + Unpin>(
    from_rmcp: DuplexStream,
    mut output: W,
    mut answers: mpsc::Receiver<Bytes>,
    rmcp_done: CancellationToken,
) {
    let mut from_rmcp = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    let mut ready: Vec<Bytes> = Vec::new();
    let (mut rmcp_open, mut answers_open) = (true, true);
    while rmcp_open || answers_open {
        tokio::select! {
            // rmcp's output is trusted and newline-framed: whole messages only.
            read = from_rmcp.read_until(b'\n', &mut line), if rmcp_open => {
                match read {
                    Ok(0) | Err(_) => {
                        rmcp_open = false;
                        rmcp_done.cancel();
                    }
                    Ok(_) => {
                        if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                            break;
                        }
                        line.clear();
                    }
                }
            }
            answer = answers.recv(), if answers_open => match answer {
                Some(answer) => {
                    // Every answer ready now leaves in one write: a write per answer woke the
                    // client for each (a fifth of the server's profile with 32 in flight; this
                    // halved the pump's share, though CPU per call did not move beyond noise).
                    // A vectored write, as copying the answers into one buffer first took 2-3%
                    // of the server's CPU at W = 32.
                    let mut bytes = answer.len();
                    ready.push(answer);
                    while bytes < BATCH_BYTES
                        && ready.len() < BATCH_ANSWERS
                        && let Ok(more) = answers.try_recv()
                    {
                        bytes += more.len();
                        ready.push(more);
                    }
                    let written = write_all(&mut output, &ready).await;
                    ready.clear();
                    if written.is_err() || output.flush().await.is_err() {
                        break;
                    }
                }
                None => answers_open = false,
            },
        }
    }
    // The input stops with the output, whichever way it ended.
    rmcp_done.cancel();
    let _ = output.flush().await;
}

/// Writes every buffer of `bufs`, in order, in as few vectored writes as `output` takes.
async fn write_all<W: AsyncWrite + Unpin>(output: &mut W, bufs: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        bufs.iter().map(|b| std::io::IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = output.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Takes at most `step` bytes a write, vectored or not, as a full pipe may.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.step - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn answers_written_in_part_arrive_whole_and_in_order() {
        let answers: Vec<Bytes> = (0..20)
            .map(|i| Bytes::from(format!("{{\"id\":{i},\"result\":{{}}}}\n")))
            .collect();
        let mut out = Trickle {
            got: Vec::new(),
            step: 7,
        };
        write_all(&mut out, &answers).await.unwrap();
        assert_eq!(out.got, answers.concat());
    }
}
