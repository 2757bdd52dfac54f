//! A serial port driven without blocking: the link thread polls it for input (commands, ACKs)
//! and output room, so a peer that stops reading never stalls the thread that answers commands.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

/// An open serial device in raw, non-blocking mode.
pub(crate) struct Port {
    // Keeps the descriptor open; I/O goes through the raw fd.
    owner: Box<dyn AsRawFd + Send>,
}

/// What a poll of the port found.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ready {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The other end is gone (pty master closed, USB adapter pulled).
    pub(crate) hangup: bool,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller keeps open; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Port {
    /// Opens `path` at `baud` (8N1, raw) with the `serialport` crate, or with plain termios
    /// where its `termios2` ioctls are missing (some drivers, qemu-user).
    pub(crate) fn open(path: &Path, baud: u32) -> Result<Port, String> {
        let name = path.to_string_lossy();
        let owner: Box<dyn AsRawFd + Send> =
            match serialport::new(name.as_ref(), baud).open_native() {
                Ok(p) => Box::new(p),
                Err(e) => match super::tty::RawTty::open(path, baud, Duration::ZERO) {
                    Ok(p) => {
                        log::debug!("{name}: opened with plain termios ({e})");
                        Box::new(p)
                    }
                    Err(_) => return Err(e.to_string()),
                },
            };
        set_nonblocking(owner.as_raw_fd()).map_err(|e| e.to_string())?;
        Ok(Port { owner })
    }

    fn fd(&self) -> RawFd {
        self.owner.as_raw_fd()
    }

    /// Waits up to `timeout` for input, or for output room when `want_write`.
    pub(crate) fn poll(&self, want_write: bool, timeout: Duration) -> io::Result<Ready> {
        let mut events = libc::POLLIN;
        if want_write {
            events |= libc::POLLOUT;
        }
        let mut p = libc::pollfd {
            fd: self.fd(),
            events,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Ready::default())
            } else {
                Err(e)
            };
        }
        Ok(Ready {
            readable: p.revents & libc::POLLIN != 0,
            writable: p.revents & libc::POLLOUT != 0,
            hangup: p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0,
        })
    }

    /// Reads what is there: `Ok(None)` when nothing is, `Ok(Some(0))` at end of file.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes.
        let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        would_block(n)
    }

    /// Writes what fits now: `Ok(None)` when nothing does.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for `buf.len()` readable bytes.
        let n = unsafe { libc::write(self.fd(), buf.as_ptr().cast(), buf.len()) };
        would_block(n)
    }
}

fn would_block(n: isize) -> io::Result<Option<usize>> {
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}
