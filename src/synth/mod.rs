//! Synthetic anomalies (trainer side, feature `train`): Poisson image editing.

pub mod poisson;
