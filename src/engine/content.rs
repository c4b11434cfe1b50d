//! The content hash that tells a revised answer from a redelivered one:
//! the fields that count, hashed together.

/// xxh3-64 of length-prefixed fields: one shot over a stack buffer for
/// the usual few hundred bytes, streaming beyond (XXH3 gives the same hash
/// either way).
pub(crate) struct FieldHasher {
    buf: [u8; 512],
    len: usize,
    spill: Option<Box<xxhash_rust::xxh3::Xxh3>>,
}

impl Default for FieldHasher {
    fn default() -> Self {
        FieldHasher {
            buf: [0; 512],
            len: 0,
            spill: None,
        }
    }
}

impl FieldHasher {
    pub(crate) fn field(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u64).to_le_bytes());
        self.bytes(b);
    }

    fn bytes(&mut self, b: &[u8]) {
        if let Some(h) = &mut self.spill {
            h.update(b);
        } else if let Some(dst) = self.buf.get_mut(self.len..self.len + b.len()) {
            dst.copy_from_slice(b);
            self.len += b.len();
        } else {
            let mut h = Box::new(xxhash_rust::xxh3::Xxh3::new());
            h.update(&self.buf[..self.len]);
            h.update(b);
            self.spill = Some(h);
        }
    }

    pub(crate) fn digest(&self) -> u64 {
        match &self.spill {
            Some(h) => h.digest(),
            None => xxhash_rust::xxh3::xxh3_64(&self.buf[..self.len]),
        }
    }
}
