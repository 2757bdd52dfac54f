//! Adam over one flat parameter buffer, in burn's formulation (so the two trainers follow the
//! same trajectory): `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`, then
//! `p -= lr m sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps sqrt(1 - b2^t))`.

/// Adam's moments and step count for one buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    /// Steps taken.
    pub time: u64,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
}

/// `beta_1`.
pub const BETA_1: f32 = 0.9;
/// `beta_2`.
pub const BETA_2: f32 = 0.999;
/// `epsilon` (CFlow-AD's PyTorch default).
pub const EPSILON: f32 = 1e-8;

const MAGIC: &[u8; 8] = b"EIADAM01";

impl Adam {
    /// Zero moments for `len` parameters.
    pub fn new(len: usize) -> Adam {
        Adam {
            time: 0,
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// One step: moments, then the parameters, in one pass.
    pub fn step(&mut self, lr: f64, params: &mut [f32], grads: &[f32]) {
        assert!(params.len() == self.m.len() && grads.len() == self.m.len());
        self.time += 1;
        let t = self.time.min(i32::MAX as u64) as i32;
        let bc2 = (1.0 - BETA_2.powi(t)).sqrt();
        let factor = bc2 / (1.0 - BETA_1.powi(t));
        let eps = EPSILON * bc2;
        let lr = lr as f32;
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = BETA_1 * *m + (1.0 - BETA_1) * g;
            *v = BETA_2 * *v + (1.0 - BETA_2) * (g * g);
            *p -= (*m * factor) / (v.sqrt() + eps) * lr;
        }
    }

    /// The state as bytes for a checkpoint: magic, time, then both moments (little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 8 * self.m.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.time.to_le_bytes());
        out.extend_from_slice(&(self.m.len() as u64).to_le_bytes());
        for x in self.m.iter().chain(&self.v) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Whether `bytes` were written by [`Adam::to_bytes`] (and not by burn's optimizer).
    pub fn is_own(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// Reads [`Adam::to_bytes`]'s output for `len` parameters.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Result<Adam, String> {
        let word = |at: usize| -> Result<u64, String> {
            bytes
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .ok_or_else(|| "optimizer state truncated".to_string())
        };
        if !Adam::is_own(bytes) {
            return Err("not an optimizer state of the CPU trainer".into());
        }
        let time = word(8)?;
        let n = word(16)? as usize;
        if n != len {
            return Err(format!(
                "optimizer state for {n} parameters, the flow has {len}"
            ));
        }
        if bytes.len() != 24 + 8 * n {
            return Err(format!(
                "optimizer state of {} bytes, {} expected",
                bytes.len(),
                24 + 8 * n
            ));
        }
        let floats: Vec<f32> = bytes[24..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let (m, v) = floats.split_at(n);
        Ok(Adam {
            time,
            m: m.to_vec(),
            v: v.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_parameter_by_lr_against_its_gradient_sign() {
        // Bias-corrected Adam's first step is lr * g / (|g| + eps): one lr per parameter.
        let mut adam = Adam::new(3);
        let mut p = vec![1.0f32, 1.0, 1.0];
        adam.step(0.01, &mut p, &[2.0, -0.5, 0.0]);
        assert!(
            (p[0] - 0.99).abs() < 1e-6 && (p[1] - 1.01).abs() < 1e-6,
            "{p:?}"
        );
        assert_eq!(p[2], 1.0);
        let again = Adam::from_bytes(&adam.to_bytes(), 3).unwrap();
        assert_eq!(again, adam);
        assert!(Adam::from_bytes(&adam.to_bytes(), 4).is_err());
        assert!(Adam::from_bytes(&adam.to_bytes()[..30], 3).is_err());
    }
}
