//! What a deframer cuts out of the byte stream, before any check of signature or content: the
//! type the framing ([`crate::wire`]) and the signature check ([`crate::signing`]) share.

/// One message as cut out of the byte stream, before decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unframed<'a> {
    /// A JSON line, without its newline (and without a trailing carriage return).
    Line(&'a [u8]),
    /// A COBS payload whose CRC matched.
    Binary(&'a [u8]),
}
