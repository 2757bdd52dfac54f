//! The CFlow-AD normalizing flows (trainer side, feature `train`), built with burn: the
//! positional encoding that conditions them, one coupling block, and the decoder of one feature
//! level with its log-likelihood. Weights convert to and from plain floats ([`BlockWeights`]) in
//! FrEIA's conventions, for tests against FrEIA's outputs and for the ONNX export. [`cpu`] is
//! the same flow written out by hand for the CPU trainer (forward, backward, Adam).

pub mod coupling;
pub mod cpu;
pub mod decoder;
pub mod positional;

pub use coupling::{BlockWeights, CouplingBlock};
pub use decoder::{Decoder, FlowOutput};
