//! Synthetic anomalies (trainer side, feature `train`): Poisson image editing and the random
//! pastes built on it.

pub mod anomaly;
pub mod poisson;
