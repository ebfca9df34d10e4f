//! The reading half: sealed bytes → age → zstd → plaintext.

use std::io::{self, BufReader, Read};
use std::sync::Arc;

use super::Error;

/// Identities that may decrypt, shareable across blocking tasks.
pub type Identities = Arc<Vec<Box<dyn age::Identity + Send + Sync>>>;

type Decoder<R> = zstd::stream::read::Decoder<'static, BufReader<age::stream::StreamReader<R>>>;

/// Plaintext of a sealed stream. At the end of the zstd frame it also reads the age stream to
/// its end, so a damaged or cut-off last chunk (or data after the frame) is an error too.
pub struct Opened<R: Read> {
    decoder: Decoder<R>,
    done: bool,
}

/// Open a sealed stream. A stream sealed to other recipients fails with [`Error::WrongKey`];
/// damage found later (a flipped byte, a cut-off end) surfaces as an `io::Error` while reading.
pub fn open<R: Read>(reader: R, identities: &Identities) -> Result<Opened<R>, Error> {
    let decryptor = age::Decryptor::new(reader).map_err(map_decrypt)?;
    let plain = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(map_decrypt)?;
    let mut decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
        zstd::zstd_safe::DCtx::in_size(),
        plain,
    ))
    .map_err(Error::Zstd)?;
    // Archives use at most the level-3 window; accept up to 2^27 so tuned writers still open.
    decoder.window_log_max(27).map_err(Error::Zstd)?;
    Ok(Opened {
        decoder,
        done: false,
    })
}

impl<R: Read> Read for Opened<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.decoder.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let mut rest = Vec::new();
            self.decoder.get_mut().read_to_end(&mut rest)?;
            if !rest.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data after the end of the compressed stream",
                ));
            }
            self.done = true;
        }
        Ok(n)
    }
}

fn map_decrypt(e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::WrongKey,
        other => Error::NotSealed {
            detail: other.to_string(),
        },
    }
}
