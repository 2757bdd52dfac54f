//! Pixel rectangles: a tile or a region of a frame, as alerts carry them.

/// An axis-aligned pixel rectangle, half-open: columns `x..x + width`, rows `y..y + height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PixelBox {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl PixelBox {
    /// Whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &PixelBox) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.x + other.width <= self.x + self.width
            && other.y + other.height <= self.y + self.height
    }

    /// Whether the two boxes share at least one pixel.
    pub fn intersects(&self, other: &PixelBox) -> bool {
        self.x < other.x + other.width
            && other.x < self.x + self.width
            && self.y < other.y + other.height
            && other.y < self.y + self.height
    }
}
