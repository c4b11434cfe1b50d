//! The byte layout the `survey_payload` target reads a Kafka record from,
//! shared with the seed corpus test (tests/fuzz_seeds.rs includes this
//! file): simple enough that a seed is written by hand.
//!
//! `[header count: u8]`, then per header `[key length: u8][key]`
//! `[value length: u16 LE, 0xFFFF for a null value][value]`; the rest is
//! the record value, where a lone `0xFF` byte stands for a null value.
//! Input that ends inside the headers keeps the headers read so far and
//! an empty value.

/// "Now" for validation: 2026-01-01T00:00:00Z. Fixed, so every run of a
/// seed gives the same verdict.
pub const NOW_MS: i64 = 1_767_225_600_000;

pub struct Record<'a> {
    pub payload: Option<&'a [u8]>,
    pub headers: Vec<Header<'a>>,
}

/// Reads a record out of fuzzer bytes; header keys that are not UTF-8 are
/// read lossily as `"?"`, as no Kafka client would hand them over.
pub fn parse(data: &[u8]) -> Record<'_> {
    let mut rest = data;
    let mut take = |n: usize| -> Option<&[u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    };
    let mut headers = Vec::new();
    let count = take(1).map_or(0, |b| b[0]);
    let mut whole = true;
    for _ in 0..count {
        match header(&mut take) {
            Some(h) => headers.push(h),
            None => {
                whole = false;
                break;
            }
        }
    }
    let payload = match rest {
        _ if !whole => Some(&[][..]),
        [0xFF] => None,
        p => Some(p),
    };
    Record { payload, headers }
}

type Header<'a> = (&'a str, Option<&'a [u8]>);

fn header<'a>(take: &mut impl FnMut(usize) -> Option<&'a [u8]>) -> Option<Header<'a>> {
    let klen = take(1)?;
    let key = take(usize::from(klen[0]))?;
    let key = std::str::from_utf8(key).unwrap_or("?");
    let vlen = take(2)?;
    let vlen = u16::from_le_bytes([vlen[0], vlen[1]]);
    let value = if vlen == u16::MAX {
        None
    } else {
        Some(take(usize::from(vlen))?)
    };
    Some((key, value))
}

/// The inverse of `parse`, for writing seeds.
pub fn encode(payload: Option<&[u8]>, headers: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut out = vec![u8::try_from(headers.len()).unwrap_or(u8::MAX)];
    for (k, v) in headers.iter().take(255) {
        out.push(u8::try_from(k.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&k.as_bytes()[..k.len().min(255)]);
        match v {
            None => out.extend_from_slice(&u16::MAX.to_le_bytes()),
            Some(v) => {
                let n = v.len().min(usize::from(u16::MAX - 1));
                out.extend_from_slice(&(n as u16).to_le_bytes());
                out.extend_from_slice(&v[..n]);
            }
        }
    }
    match payload {
        None => out.push(0xFF),
        Some(p) => out.extend_from_slice(p),
    }
    out
}
