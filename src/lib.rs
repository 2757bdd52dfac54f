//! edge-inspector: the on-device daemon `inspectd`, for tunnels, bridges and pavement.
//!
//! The data flow, one module per stage: [`frames`] -> the detector (crate `inspect-core`:
//! tiler -> tract engine -> scorer, the same code `inspect-train`'s evaluation and calibration
//! run) -> [`alerts`] (journal, then the serial link) with [`evidence`] images and [`gpio`]
//! signals and [`position`]s, frames saved by [`record`] for enrollment, driven by [`daemon`]
//! with a validated [`config`]; devices that go away are reopened after a [`backoff`]. Each
//! table of the config is defined and checked by the module it configures; `config` only
//! assembles them. The wire protocol is the `inspect-protocol` crate (ARCHITECTURE.md).

#![warn(missing_docs)]

pub mod alerts;
pub mod backoff;
pub mod config;
#[cfg(target_os = "linux")]
pub mod daemon;
pub mod evidence;
pub mod frames;
pub mod gpio;
pub mod position;
pub mod record;
