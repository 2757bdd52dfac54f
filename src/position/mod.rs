//! Where the device is when a frame is taken, so every alert (and every recorded frame) can be
//! placed on the structure: the chainage from an odometer (the GPIO trigger's pulses x metres
//! per pulse, from the structure's reference point), or a fix from a GNSS receiver on a serial
//! port (NMEA 0183). A folder of frames may carry its own positions (`positions.csv`, what
//! `[record]` writes), which replays a run with the positions it had.

#[cfg(target_os = "linux")]
mod gnss;
pub mod nmea;
pub mod replay;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

#[cfg(target_os = "linux")]
pub use gnss::GnssReceiver;
use inspect_core::settings::{Checker, ConfigError};
pub use inspect_protocol::{Fix, Position};

use crate::gpio::Pulses;

/// `[position]`: where positions come from, chosen by `source`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum PositionSettings {
    /// The GPIO trigger's pulses (`[gpio] trigger`), e.g. a wheel encoder.
    Odometer {
        /// Metres travelled per pulse, 0.000001-100.
        metres_per_pulse: f64,
        /// Chainage at start in metres (where the robot starts from the reference point),
        /// -1000000 to 1000000.
        #[serde(default)]
        start_m: f64,
    },
    /// A GNSS receiver's NMEA 0183 sentences (`GGA`, `RMC`) on a serial port.
    Gnss {
        /// The receiver's serial device (`/dev/ttyACM0`, `/dev/serial/by-id/...`).
        port: PathBuf,
        /// Its speed (one of the alert link's rates; receivers default to 9600).
        #[serde(default = "default_gnss_baud")]
        baud: u32,
        /// A fix older than this many milliseconds is marked stale, 100-600000.
        #[serde(default = "default_max_age_ms")]
        max_age_ms: u64,
    },
}

fn default_gnss_baud() -> u32 {
    9600
}
fn default_max_age_ms() -> u64 {
    2000
}

impl PositionSettings {
    /// Checks the values of the chosen source; `has_trigger`: whether `[gpio] trigger` is set.
    pub fn validate(&self, c: &Checker<'_>, has_trigger: bool) -> Result<(), ConfigError> {
        match self {
            PositionSettings::Odometer {
                metres_per_pulse,
                start_m,
            } => {
                if !(1e-6..=100.0).contains(metres_per_pulse) {
                    return Err(c.fail(
                        "position.metres_per_pulse",
                        metres_per_pulse,
                        "0.000001 to 100",
                    ));
                }
                if !(-1e6..=1e6).contains(start_m) {
                    return Err(c.fail("position.start_m", start_m, "-1000000 to 1000000"));
                }
                if !has_trigger {
                    return Err(c.fail(
                        "position.source",
                        "\"odometer\"",
                        "a [gpio] trigger line: the odometer counts its pulses",
                    ));
                }
                Ok(())
            }
            PositionSettings::Gnss {
                baud, max_age_ms, ..
            } => {
                crate::alerts::settings::check_baud(c, "position.baud", *baud)?;
                c.range("position.max_age_ms", *max_age_ms, 100, 600_000)
            }
        }
    }

    /// Relative paths against the config's folder.
    pub fn resolve(&mut self, base: &std::path::Path) {
        if let PositionSettings::Gnss { port, .. } = self {
            if port.is_relative() {
                *port = base.join(&*port);
            }
        }
    }
}

/// The position of the device now, from whichever source is configured.
#[derive(Debug, Clone, Default)]
pub enum PositionTracker {
    /// No position source.
    #[default]
    None,
    /// Chainage from counted pulses.
    Odometer {
        /// The trigger's pulse counter.
        pulses: Arc<Pulses>,
        /// Metres per pulse.
        metres_per_pulse: f64,
        /// Chainage at start.
        start_m: f64,
    },
    /// The last fix of a GNSS receiver.
    #[cfg(target_os = "linux")]
    Gnss(Arc<GnssReceiver>),
}

impl PositionTracker {
    /// The configured source, started: the odometer counts `pulses` (the trigger's, none when
    /// its line could not be opened: then no position, with a warning); a GNSS receiver gets its
    /// reading thread.
    pub fn start(
        settings: Option<&PositionSettings>,
        pulses: Option<Arc<Pulses>>,
    ) -> std::io::Result<PositionTracker> {
        Ok(match settings {
            None => PositionTracker::None,
            Some(PositionSettings::Odometer {
                metres_per_pulse,
                start_m,
            }) => match pulses {
                Some(pulses) => {
                    log::info!(
                        "chainage from the trigger's pulses: {metres_per_pulse} m each, from \
                         {start_m} m"
                    );
                    PositionTracker::Odometer {
                        pulses,
                        metres_per_pulse: *metres_per_pulse,
                        start_m: *start_m,
                    }
                }
                None => {
                    log::warn!(
                        "position.source = \"odometer\" but the trigger line is not open: \
                         alerts carry no position"
                    );
                    PositionTracker::None
                }
            },
            #[cfg(target_os = "linux")]
            Some(PositionSettings::Gnss {
                port,
                baud,
                max_age_ms,
            }) => PositionTracker::Gnss(GnssReceiver::start(
                port,
                *baud,
                std::time::Duration::from_millis(*max_age_ms),
            )?),
            #[cfg(not(target_os = "linux"))]
            Some(PositionSettings::Gnss { .. }) => {
                log::warn!("GNSS receivers are read on Linux only: alerts carry no position");
                PositionTracker::None
            }
        })
    }

    /// One phrase for the status line: the chainage now, or what the GNSS receiver said; none
    /// without a source.
    pub fn describe(&self, now: SystemTime) -> Option<String> {
        match self {
            PositionTracker::None => None,
            PositionTracker::Odometer { pulses, .. } => {
                let metres = match self.position_at(now)?.fix {
                    Fix::Chainage { metres } => metres,
                    Fix::Gnss { .. } => return None,
                };
                Some(format!(
                    "chainage {metres:.2} m ({} pulses)",
                    pulses.total()
                ))
            }
            #[cfg(target_os = "linux")]
            PositionTracker::Gnss(receiver) => Some(receiver.describe(now)),
        }
    }

    /// Where the device is at `when` (a frame's capture time), if the source knows.
    pub fn position_at(&self, when: SystemTime) -> Option<Position> {
        match self {
            PositionTracker::None => None,
            // The count is read as the frame is handed over: age 0.
            PositionTracker::Odometer {
                pulses,
                metres_per_pulse,
                start_m,
            } => Some(Position {
                fix: Fix::Chainage {
                    metres: start_m + pulses.total() as f64 * metres_per_pulse,
                },
                age_ms: 0,
                stale: false,
            }),
            #[cfg(target_os = "linux")]
            PositionTracker::Gnss(receiver) => receiver.position_at(when),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn odometer_chainage_is_pulses_times_metres_from_the_start() {
        let pulses = Arc::new(Pulses::new(1));
        let tracker = PositionTracker::Odometer {
            pulses: pulses.clone(),
            metres_per_pulse: 0.05,
            start_m: 120.0,
        };
        for _ in 0..250 {
            pulses.record();
        }
        let p = tracker.position_at(SystemTime::now()).unwrap();
        assert_eq!(p.fix, Fix::Chainage { metres: 132.5 });
        assert!(!p.stale);
        assert_eq!(
            tracker.describe(SystemTime::now()).as_deref(),
            Some("chainage 132.50 m (250 pulses)")
        );
        assert_eq!(PositionTracker::None.position_at(SystemTime::now()), None);
        assert_eq!(PositionTracker::None.describe(SystemTime::now()), None);
    }

    #[test]
    fn settings_name_the_key_and_the_range() {
        let c = Checker {
            path: Path::new("inspectd.toml"),
        };
        let odometer = |m: f64| PositionSettings::Odometer {
            metres_per_pulse: m,
            start_m: 0.0,
        };
        assert!(odometer(0.01).validate(&c, true).is_ok());
        let err = odometer(0.0).validate(&c, true).unwrap_err().to_string();
        assert!(err.contains("position.metres_per_pulse"), "{err}");
        let err = odometer(0.01).validate(&c, false).unwrap_err().to_string();
        assert!(err.contains("[gpio] trigger"), "{err}");
        let gnss = |baud, max_age_ms| PositionSettings::Gnss {
            port: "/dev/ttyACM0".into(),
            baud,
            max_age_ms,
        };
        assert!(gnss(9600, 2000).validate(&c, false).is_ok());
        let err = gnss(9601, 2000)
            .validate(&c, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("position.baud"), "{err}");
        let err = gnss(9600, 10).validate(&c, false).unwrap_err().to_string();
        assert!(err.contains("position.max_age_ms"), "{err}");
        let parsed: PositionSettings =
            toml::from_str("source = \"gnss\"\nport = \"gps\"\n").unwrap();
        assert_eq!(parsed, gnss(9600, 2000).with_port("gps"));
        assert!(toml::from_str::<PositionSettings>("source = \"gnss\"\nprot = \"x\"").is_err());
    }

    impl PositionSettings {
        fn with_port(self, p: &str) -> PositionSettings {
            match self {
                PositionSettings::Gnss {
                    baud, max_age_ms, ..
                } => PositionSettings::Gnss {
                    port: p.into(),
                    baud,
                    max_age_ms,
                },
                other => other,
            }
        }
    }
}
