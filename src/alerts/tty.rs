//! A serial port opened with plain POSIX termios, used when the `serialport` crate cannot open
//! one: it configures ports through Linux's `termios2` ioctls, which some kernels' drivers and
//! qemu-user (our ARM test runner) do not implement.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// A raw-mode, non-blocking serial port whose writes give up after a timeout.
#[derive(Debug)]
pub struct RawTty {
    file: File,
    timeout: Duration,
}

fn speed(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        460800 => libc::B460800,
        500000 => libc::B500000,
        921600 => libc::B921600,
        1000000 => libc::B1000000,
        _ => return None,
    })
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl RawTty {
    /// Opens `path` in raw mode (8N1, no flow control) at `baud`.
    pub fn open(path: &Path, baud: u32, timeout: Duration) -> io::Result<RawTty> {
        let speed = speed(baud).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported baud rate {baud}"),
            )
        })?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)?;
        let fd = file.as_raw_fd();
        // SAFETY: `termios` is plain data; the calls only read and write the struct we own and
        // act on a descriptor that `file` keeps open.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            check(libc::tcgetattr(fd, &mut t))?;
            libc::cfmakeraw(&mut t);
            t.c_cflag |= libc::CLOCAL | libc::CREAD;
            t.c_cflag &= !libc::CRTSCTS;
            check(libc::cfsetispeed(&mut t, speed))?;
            check(libc::cfsetospeed(&mut t, speed))?;
            check(libc::tcsetattr(fd, libc::TCSANOW, &t))?;
        }
        Ok(RawTty { file, timeout })
    }

    fn wait_writable(&self) -> io::Result<()> {
        let mut poll = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = self.timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, ms) };
        match ready {
            r if r < 0 => Err(io::Error::last_os_error()),
            0 => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "serial write timed out",
            )),
            _ => Ok(()),
        }
    }
}

impl AsRawFd for RawTty {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

impl Write for RawTty {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.file.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable()?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialport::SerialPort;
    use std::io::Read;

    #[test]
    fn raw_tty_writes_to_a_pty_and_times_out_when_nobody_reads() {
        let (mut master, slave) = serialport::TTYPort::pair().unwrap();
        let path = slave.name().unwrap();
        let mut tty = RawTty::open(Path::new(&path), 115200, Duration::from_millis(100)).unwrap();
        tty.write_all(b"hello\n").unwrap();
        master.set_timeout(Duration::from_secs(2)).unwrap();
        let mut buf = [0u8; 6];
        master.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello\n");
        // Nobody reads any more: the pty buffer fills and a write must time out, not hang.
        let block = [b'x'; 4096];
        let err = (0..10_000)
            .find_map(|_| tty.write_all(&block).err())
            .expect("a pty buffer is finite");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(RawTty::open(Path::new(&path), 12345, Duration::from_millis(1)).is_err());
    }
}
