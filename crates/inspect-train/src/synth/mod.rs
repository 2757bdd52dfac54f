//! Synthetic anomalies (trainer side, feature `train`): Poisson image editing and the random
//! pastes built on it, configured by a validated `[synthesis]` table and fed by a defect bank.

pub mod anomaly;
pub mod bank;
pub mod config;
pub mod poisson;
pub mod sheet;
