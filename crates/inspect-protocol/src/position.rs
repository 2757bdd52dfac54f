//! Where the device was when a frame was taken: the distance along the structure from an
//! odometer (chainage), or a GNSS fix. Alerts and status reports carry it from protocol
//! version 2 on.

/// A position reading and how much to trust it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// What was read.
    pub fix: Fix,
    /// Milliseconds between the reading and the frame's capture (or the report).
    pub age_ms: u32,
    /// Older than the configured limit (or the receiver lost its fix): shown, not to be trusted.
    pub stale: bool,
}

/// A position reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fix {
    /// Metres along the structure from its reference point (odometer pulses x metres per pulse).
    Chainage {
        /// Metres from the reference point.
        metres: f64,
    },
    /// Latitude and longitude in degrees (WGS 84), from a GNSS receiver.
    Gnss {
        /// Degrees north (negative: south), -90 to 90.
        lat: f64,
        /// Degrees east (negative: west), -180 to 180.
        lon: f64,
    },
}

impl Fix {
    /// The source's name on the wire.
    pub fn source(&self) -> &'static str {
        match self {
            Fix::Chainage { .. } => "odometer",
            Fix::Gnss { .. } => "gnss",
        }
    }
}

/// Metres of chainage a line can carry: more than any structure, and few enough digits that
/// the widest alert still fits a line.
pub const MAX_CHAINAGE_M: f64 = 1e7;

impl Position {
    /// The reading with its numbers brought into range: non-finite values become 0 and marked
    /// stale, latitude and longitude are clamped to the globe, chainage to
    /// +/-[`MAX_CHAINAGE_M`]. Encoders write only sanitised positions.
    pub fn sanitised(self) -> Position {
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        let broken = match self.fix {
            Fix::Chainage { metres } => !metres.is_finite(),
            Fix::Gnss { lat, lon } => !lat.is_finite() || !lon.is_finite(),
        };
        let fix = match self.fix {
            Fix::Chainage { metres } => Fix::Chainage {
                metres: finite(metres).clamp(-MAX_CHAINAGE_M, MAX_CHAINAGE_M),
            },
            Fix::Gnss { lat, lon } => Fix::Gnss {
                lat: finite(lat).clamp(-90.0, 90.0),
                lon: finite(lon).clamp(-180.0, 180.0),
            },
        };
        Position {
            fix,
            age_ms: self.age_ms,
            stale: self.stale || broken,
        }
    }
}
