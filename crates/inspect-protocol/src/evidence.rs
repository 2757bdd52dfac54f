//! The names of evidence files: the daemon's store and the monitor's log use the same ones, so
//! a technician finds alert 41's tile under the same name on both ends.

use crate::command::Part;

/// The file name of `part` of alert `seq` (zero-padded, so names sort by `seq`).
pub fn file_name(seq: u64, part: Part) -> String {
    format!("{seq:012}-{}", part_suffix(part))
}

/// The alert a file name belongs to, if it is an evidence file's name.
pub fn seq_of(name: &str) -> Option<u64> {
    let (seq, rest) = name.split_once('-')?;
    [Part::Tile, Part::Heatmap]
        .iter()
        .any(|&part| rest == part_suffix(part))
        .then(|| seq.parse().ok())
        .flatten()
}

fn part_suffix(part: Part) -> &'static str {
    match part {
        Part::Tile => "tile.jpg",
        Part::Heatmap => "heatmap.png",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_seq_and_parse_back() {
        let a = file_name(9, Part::Tile);
        let b = file_name(10, Part::Heatmap);
        assert_eq!(a, "000000000009-tile.jpg");
        assert!(a < b);
        assert_eq!(seq_of(&a), Some(9));
        assert_eq!(seq_of(&b), Some(10));
        assert_eq!(seq_of("000000000009-tile.png"), None);
        assert_eq!(seq_of("x-tile.jpg"), None);
        assert_eq!(seq_of("notes.txt"), None);
    }
}
