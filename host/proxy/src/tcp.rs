//! The TCP sockets the gateway serves and forwards on, read and written by their own system
//! calls rather than libc's.
//!
//! glibc's `recv` and `send` are thread-cancellation points: in a process with more than one
//! thread, each call switches the thread to asynchronous cancellation and back, an atomic
//! compare-and-swap on either side of the system call. (A single-threaded process, such as an
//! nginx worker, skips both.) A proxied request makes four such calls, and `perf` put the
//! two locked instructions of each, which wait for the store buffer to drain as the kernel
//! returns, at ≈ 1.8% of the request's CPU time. The gateway never cancels a thread, so its
//! sockets call `recvfrom`, `sendto` and `sendmsg` directly (with `MSG_NOSIGNAL`, as std
//! does) and leave readiness to tokio, as tokio's own stream does.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A connected TCP stream; see the module's documentation.
pub(crate) struct Tcp(TcpStream);

impl Tcp {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self(stream)
    }

    /// The stream, for what is not reading or writing (its addresses, its readiness).
    pub(crate) fn get_ref(&self) -> &TcpStream {
        &self.0
    }
}

/// Runs `op` (a non-blocking system call on `stream` that returns a byte count) once the
/// stream is ready for `interest`. A short transfer means the socket's buffer is drained
/// (read) or full (written), so, as tokio's own stream does, it clears the readiness that
/// epoll will set again; tokio's `try_io` clears it only on `WouldBlock`, so a short
/// transfer is reported to it as one and the count handed back beside it.
fn transfer(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    interest: Interest,
    len: usize,
    mut op: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        if interest == Interest::READABLE {
            ready!(stream.poll_read_ready(cx))?;
        } else {
            ready!(stream.poll_write_ready(cx))?;
        }
        let mut done = None;
        let tried = stream.try_io(interest, || {
            let n = op()?;
            done = Some(n);
            if n > 0 && n < len {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        if let Some(n) = done {
            return Poll::Ready(Ok(n));
        }
        match tried {
            // Readiness was stale: wait for the next.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
            Ok(()) => unreachable!("a transfer that succeeded says how much it moved"),
        }
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let fd = fd(&self.0);
        #[allow(unsafe_code)]
        // SAFETY: the kernel only writes into the unfilled part, and `assume_init` below
        // covers exactly the bytes it reports written.
        let unfilled = unsafe { buf.unfilled_mut() };
        let (ptr, len) = (unfilled.as_mut_ptr().cast::<u8>(), unfilled.len());
        let n = ready!(transfer(&self.0, cx, Interest::READABLE, len, || {
            sys::recv(fd, ptr, len)
        }))?;
        #[allow(unsafe_code)]
        // SAFETY: `recvfrom` wrote `n` bytes at the start of the unfilled part.
        unsafe {
            buf.assume_init(n)
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let fd = fd(&self.0);
        transfer(&self.0, cx, Interest::WRITABLE, buf.len(), || {
            sys::send(fd, buf)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let fd = fd(&self.0);
        // Counted over the slices that go, so that a full write of them is not taken for a
        // short one (which would clear readiness that epoll does not set again).
        let bufs = &bufs[..bufs.len().min(MAX_IOV)];
        let len = bufs.iter().map(|b| b.len()).sum();
        transfer(&self.0, cx, Interest::WRITABLE, len, || {
            sys::send_vectored(fd, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Most slices one vectored write takes (Linux's `UIO_MAXIOV`, POSIX's least `IOV_MAX`).
const MAX_IOV: usize = 1024;

fn fd(stream: &TcpStream) -> std::os::fd::RawFd {
    std::os::fd::AsRawFd::as_raw_fd(stream)
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys {
    use std::io::{self, IoSlice};
    use std::os::fd::RawFd;

    use libc::c_long;

    /// Makes system call `nr` with `args`, again if a signal interrupted it.
    fn call(nr: c_long, args: [c_long; 6]) -> io::Result<usize> {
        loop {
            // SAFETY: every caller passes arguments that are valid for its call `nr` (a
            // descriptor and memory it owns for the call's duration); `syscall` is not a
            // cancellation point and takes its arguments as `long`s, which these are.
            let n =
                unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// `recvfrom(fd, ptr, len, 0, NULL, NULL)`: `ptr` is writable for `len` bytes.
    pub(super) fn recv(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
        call(
            libc::SYS_recvfrom,
            [fd as c_long, ptr as c_long, len as c_long, 0, 0, 0],
        )
    }

    /// `sendto(fd, buf, len, MSG_NOSIGNAL, NULL, 0)`.
    pub(super) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
        call(
            libc::SYS_sendto,
            [
                fd as c_long,
                buf.as_ptr() as c_long,
                buf.len() as c_long,
                libc::MSG_NOSIGNAL as c_long,
                0,
                0,
            ],
        )
    }

    /// `sendmsg` of `bufs` with `MSG_NOSIGNAL`.
    pub(super) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: all-zero is a valid `msghdr` (no address, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // `IoSlice` is ABI-compatible with `iovec` on Unix; the kernel only reads them.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len() as _;
        call(
            libc::SYS_sendmsg,
            [
                fd as c_long,
                &msg as *const libc::msghdr as c_long,
                libc::MSG_NOSIGNAL as c_long,
                0,
                0,
                0,
            ],
        )
    }
}

/// Elsewhere, libc's calls (through std) serve.
#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io::{self, IoSlice, Write};
    use std::mem::ManuallyDrop;
    use std::net::TcpStream;
    use std::os::fd::{FromRawFd, RawFd};

    fn stream(fd: RawFd) -> ManuallyDrop<TcpStream> {
        #[allow(unsafe_code)]
        // SAFETY: `fd` is an open socket that outlives the call; the stream is never dropped.
        ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) })
    }

    pub(super) fn recv(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
        use std::io::Read;
        #[allow(unsafe_code)]
        // SAFETY: `ptr` is writable for `len` bytes; zeroed first, they are initialised.
        let buf = unsafe {
            std::ptr::write_bytes(ptr, 0, len);
            std::slice::from_raw_parts_mut(ptr, len)
        };
        (&*stream(fd)).read(buf)
    }

    pub(super) fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
        (&*stream(fd)).write(buf)
    }

    pub(super) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*stream(fd)).write_vectored(bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both ends of a loopback connection: (connecting, accepted).
    async fn pair() -> (Tcp, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Tcp::new(client.unwrap()), accepted.unwrap().0)
    }

    /// Bytes both ways, a vectored write, a short read that leaves more to come, and the end
    /// of the stream, over a real loopback connection.
    #[tokio::test]
    async fn reads_and_writes_by_system_call() {
        let (mut client, server) = pair().await;
        let mut server = Tcp::new(server);

        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");

        let parts = [IoSlice::new(b"one "), IoSlice::new(b"two")];
        let n = server.write_vectored(&parts).await.unwrap();
        assert_eq!(n, 7);
        let mut got = [0u8; 7];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");

        // A read smaller than what is waiting, then the rest after the peer's shutdown.
        let big = vec![7u8; 200_000];
        let writer = async {
            client.write_all(&big).await.unwrap();
            client.shutdown().await.unwrap();
        };
        let reader = async {
            let mut all = Vec::new();
            server.read_to_end(&mut all).await.unwrap();
            all
        };
        let ((), all) = tokio::join!(writer, reader);
        assert_eq!(all.len(), big.len());
        assert!(all.iter().all(|&b| b == 7));
    }

    /// Writing to a peer that has gone fails with an error, not a signal.
    #[tokio::test]
    async fn a_write_to_a_closed_peer_is_an_error() {
        let (mut client, server) = pair().await;
        drop(server);
        let mut failed = false;
        for _ in 0..100 {
            if client.write_all(&[0u8; 65536]).await.is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(failed, "writes to a closed peer kept succeeding");
    }
}
