//! burn tensors read back as plain floats: for checkpoints and exports, progress figures and the
//! losses' per-fiber masks. Imports nothing of the crate, so the flows and the losses can both
//! use it without importing each other.

use burn::tensor::Tensor;

/// A tensor's values as floats (empty if the backend cannot give them as f32).
pub(crate) fn floats<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}
