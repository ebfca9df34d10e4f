//! The reading half: sealed bytes → age → zstd → plaintext.

use std::io::Read;
use std::sync::Arc;

use super::Error;

/// Identities that may decrypt, shareable across blocking tasks.
pub type Identities = Arc<Vec<Box<dyn age::Identity + Send + Sync>>>;

/// Open a sealed stream. A stream sealed to other recipients fails with [`Error::WrongKey`];
/// damage found later (a flipped byte, a cut-off end) surfaces as an `io::Error` while reading.
pub fn open<R: Read>(reader: R, identities: &Identities) -> Result<impl Read + use<R>, Error> {
    let decryptor = age::Decryptor::new(reader).map_err(map_decrypt)?;
    let plain = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(map_decrypt)?;
    let mut z = zstd::stream::read::Decoder::new(plain).map_err(Error::Zstd)?;
    // Archives use at most the level-3 window; accept up to 2^27 so tuned writers still open.
    z.window_log_max(27).map_err(Error::Zstd)?;
    Ok(z)
}

fn map_decrypt(e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::WrongKey,
        other => Error::NotSealed {
            detail: other.to_string(),
        },
    }
}
