//! The GNSS receiver: a thread that reads NMEA sentences from a serial port and keeps the last
//! fix, reopening the port with backoff when it goes away (a USB receiver unplugged).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::nmea::{parse, LineAssembler, NmeaError, Reading};
use super::{Fix, Position};
use crate::backoff::Backoff;

/// What the receiver last said, and when.
#[derive(Clone, Copy, Debug, Default)]
struct Latest {
    // The last valid fix and when it came.
    fix: Option<(f64, f64, SystemTime)>,
    // The receiver reported no fix after it.
    lost: bool,
}

/// The last fix of a GNSS receiver, kept current by its reading thread.
#[derive(Debug)]
pub struct GnssReceiver {
    latest: Mutex<Latest>,
    max_age: Duration,
    /// Position sentences read (fix or no fix).
    pub sentences: AtomicU64,
    /// Lines that failed their checksum or did not parse (noise).
    pub bad_sentences: AtomicU64,
    stop: AtomicBool,
}

impl GnssReceiver {
    /// A receiver with no fix yet; fixes older than `max_age` are marked stale.
    pub fn new(max_age: Duration) -> GnssReceiver {
        GnssReceiver {
            latest: Mutex::new(Latest::default()),
            max_age,
            sentences: AtomicU64::new(0),
            bad_sentences: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// Takes one line from the receiver, received at `at`.
    pub fn take_line(&self, line: &str, at: SystemTime) {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        match parse(line) {
            Ok(Reading::Fix { lat, lon }) => {
                *latest = Latest {
                    fix: Some((lat, lon, at)),
                    lost: false,
                };
                self.sentences.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Reading::NoFix) => {
                latest.lost = true;
                self.sentences.fetch_add(1, Ordering::Relaxed);
            }
            Err(NmeaError::Other) => {}
            Err(e) => {
                self.bad_sentences.fetch_add(1, Ordering::Relaxed);
                log::debug!("GNSS: {e}: {line:?}");
            }
        }
    }

    /// The last fix as a position at `when`: stale when older than the limit or when the
    /// receiver has lost its fix since; none before the first fix.
    pub fn position_at(&self, when: SystemTime) -> Option<Position> {
        let latest = *self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let (lat, lon, at) = latest.fix?;
        let age = when.duration_since(at).unwrap_or_default();
        Some(Position {
            fix: Fix::Gnss { lat, lon },
            age_ms: age.as_millis().min(u32::MAX as u128) as u32,
            stale: latest.lost || age > self.max_age,
        })
    }

    /// Starts the thread that reads `port` at `baud` until [`GnssReceiver::stop`].
    pub fn start(port: &Path, baud: u32, max_age: Duration) -> std::io::Result<Arc<GnssReceiver>> {
        let receiver = Arc::new(GnssReceiver::new(max_age));
        let (shared, port) = (receiver.clone(), port.to_path_buf());
        std::thread::Builder::new()
            .name("gnss".into())
            .spawn(move || read_loop(&shared, &port, baud))?;
        Ok(receiver)
    }

    /// Sentences read and lines refused so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sentences.load(Ordering::Relaxed),
            self.bad_sentences.load(Ordering::Relaxed),
        )
    }

    /// One phrase for the status line: what the receiver said so far and how old its fix is at
    /// `now`, so a crew sees a silent or noisy receiver before the alerts go stale.
    pub fn describe(&self, now: SystemTime) -> String {
        let (sentences, bad) = self.counts();
        let fix = match self.position_at(now) {
            None => "no fix yet".to_string(),
            Some(p) => format!(
                "fix {:.1} s old{}",
                f64::from(p.age_ms) / 1000.0,
                if p.stale { " (stale)" } else { "" }
            ),
        };
        format!("GNSS: {sentences} sentences, {bad} unreadable, {fix}")
    }

    /// Asks the reading thread to end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_loop(receiver: &GnssReceiver, path: &Path, baud: u32) {
    use crate::alerts::port::Port;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(8));
    while !receiver.stop.load(Ordering::Relaxed) {
        let mut port = match Port::open(path, baud) {
            Ok(p) => {
                log::info!("GNSS receiver on {} at {baud} baud", path.display());
                backoff.reset();
                p
            }
            Err(e) => {
                if backoff.is_fresh() {
                    log::warn!("GNSS receiver {}: {e}; retrying", path.display());
                }
                std::thread::sleep(backoff.failed());
                continue;
            }
        };
        let mut lines = LineAssembler::default();
        let mut buf = [0u8; 256];
        loop {
            if receiver.stop.load(Ordering::Relaxed) {
                return;
            }
            match port.poll(false, Duration::from_millis(100)) {
                Ok(ready) if ready.readable => match port.read(&mut buf) {
                    Ok(Some(n)) if n > 0 => {
                        let now = SystemTime::now();
                        lines.push(&buf[..n], |line| receiver.take_line(line, now));
                    }
                    Ok(Some(_)) => break,
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!("GNSS receiver {}: {e}; reopening", path.display());
                        break;
                    }
                },
                Ok(ready) if ready.hangup => break,
                Ok(_) => {}
                Err(e) => {
                    log::warn!("GNSS receiver {}: {e}; reopening", path.display());
                    break;
                }
            }
        }
        std::thread::sleep(backoff.current());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX: &str = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47";

    #[test]
    fn fixes_age_go_stale_and_a_lost_fix_marks_the_last_one() {
        let r = GnssReceiver::new(Duration::from_secs(2));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(r.position_at(t0), None, "no fix yet");
        r.take_line(FIX, t0);
        let p = r.position_at(t0 + Duration::from_millis(500)).unwrap();
        assert_eq!((p.age_ms, p.stale), (500, false));
        assert!(matches!(p.fix, Fix::Gnss { lat, .. } if (lat - 48.1173).abs() < 1e-9));
        assert!(r.position_at(t0 + Duration::from_secs(3)).unwrap().stale);
        // Noise is counted and changes nothing; a no-fix sentence makes the last fix stale.
        r.take_line("$GPGGA,123519,4807.038,N,01131.000,E,1*00", t0);
        assert_eq!(r.bad_sentences.load(Ordering::Relaxed), 1);
        r.take_line(
            "$GPGGA,,,,,,0,00,99.99,,,,,,*48",
            t0 + Duration::from_millis(100),
        );
        let p = r.position_at(t0 + Duration::from_millis(200)).unwrap();
        assert!(p.stale);
        r.take_line(FIX, t0 + Duration::from_secs(1));
        assert!(!r.position_at(t0 + Duration::from_secs(1)).unwrap().stale);
        assert_eq!(r.counts(), (3, 1));
        assert_eq!(
            r.describe(t0 + Duration::from_millis(1500)),
            "GNSS: 3 sentences, 1 unreadable, fix 0.5 s old"
        );
        assert_eq!(
            r.describe(t0 + Duration::from_secs(4)),
            "GNSS: 3 sentences, 1 unreadable, fix 3.0 s old (stale)"
        );
        assert_eq!(
            GnssReceiver::new(Duration::from_secs(2)).describe(t0),
            "GNSS: 0 sentences, 0 unreadable, no fix yet"
        );
    }
}
