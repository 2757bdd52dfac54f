//! Helpers shared by the trainer's on-disk records (feature cache, checkpoints): a bounds-checked
//! little-endian reader, and the progress bar of long passes.

/// Reads little-endian values from a byte slice; every read checks the length.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    /// Whether every byte was read.
    pub(crate) fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(n).ok_or("truncated")?;
        let s = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(s)
    }

    /// A `u32`.
    pub(crate) fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `u64` (checkpoints only).
    #[cfg(feature = "train")]
    pub(crate) fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(std::array::from_fn(|i| b[i])))
    }

    /// `n` `f32` values.
    pub(crate) fn f32s(&mut self, n: usize) -> Result<Vec<f32>, &'static str> {
        let raw = self.take(n.checked_mul(4).ok_or("too long")?)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// A progress bar of `len` steps on standard error drawn with `template` (indicatif syntax), or
/// a hidden one when `enabled` is false. indicatif hides it anyway when stderr is not a terminal.
pub(crate) fn progress_bar(enabled: bool, len: usize, template: &str) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
