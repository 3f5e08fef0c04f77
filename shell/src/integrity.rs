//! `integrity`: proof that a hostile L1 left L0 and the other L1s alone.
//! The kernel measures named regions (L0's text and read-only data, the RAM
//! of every quiescent L1, each core's VMCS0-1 host state) into [`Item`]s;
//! this module hashes, compares a snapshot with a later measurement and
//! words the verdict. Pure, so every rule is tested on the host.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// One measured region: a stable name (what is compared), its hash, and
/// where it was found (shown, not compared: an L1's RAM may move on restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub name: String,
    pub hash: u64,
    pub detail: String,
}

/// FNV-1a over 64-bit words (offset basis and prime of the 64-bit FNV).
/// Each step (xor a word, multiply by an odd constant) is a bijection of the
/// running value, so changing any single word always changes the result.
#[derive(Clone, Copy, Debug)]
pub struct Hasher(u64);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher {
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }
    /// Whole words first, the tail (< 8 bytes) zero-padded, then the length,
    /// so that trailing zero bytes still count.
    pub fn bytes(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut tail = [0u8; 8];
            tail[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(tail));
        }
        self.word(b.len() as u64);
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash of a byte region.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = Hasher::default();
    h.bytes(b);
    h.finish()
}

/// Items as one line each: `<hash> <name> | <detail>` (also the wire format
/// between a core's mailbox answer and the shell).
pub fn encode(items: &[Item]) -> String {
    let mut s = String::new();
    for i in items {
        let _ = writeln!(s, "{:016x} {} | {}", i.hash, i.name, i.detail);
    }
    s
}

/// The inverse of [`encode`]; lines that are not items (an error text) are
/// returned apart, so a core that could not answer is shown, not dropped.
pub fn decode(text: &str) -> (Vec<Item>, Vec<String>) {
    let (mut items, mut other) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = line.split_once(' ').and_then(|(h, rest)| {
            let hash = u64::from_str_radix(h, 16).ok().filter(|_| h.len() == 16)?;
            let (name, detail) = rest.split_once(" | ")?;
            Some(Item { name: name.into(), hash, detail: detail.into() })
        });
        match parsed {
            Some(i) => items.push(i),
            None => other.push(line.into()),
        }
    }
    (items, other)
}

/// What `integrity check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub equal: usize,
    /// Measured before and after with another hash.
    pub differ: Vec<String>,
    /// In the snapshot but not measurable now (an L1 that was quiescent is
    /// running again or gone, a core that does not answer): not proven.
    pub gone: Vec<String>,
    /// Measured now only (e.g. an L1 that has finished since): shown.
    pub new: usize,
    pub text: String,
}

impl Verdict {
    pub fn unharmed(&self) -> bool {
        self.differ.is_empty() && self.gone.is_empty()
    }
}

/// Compares a snapshot with a measurement, item by item (by name).
pub fn compare(before: &[Item], now: &[Item]) -> Verdict {
    let mut v = Verdict::default();
    for b in before {
        match now.iter().find(|n| n.name == b.name) {
            Some(n) if n.hash == b.hash => {
                v.equal += 1;
                let _ = writeln!(v.text, "integrity: equal   {:016x} {} ({})", n.hash, n.name, n.detail);
            }
            Some(n) => {
                let _ = writeln!(
                    v.text,
                    "integrity: DIFFERS {:016x} -> {:016x} {} (was {}; now {})",
                    b.hash, n.hash, n.name, b.detail, n.detail
                );
                v.differ.push(b.name.clone());
            }
            None => {
                let _ = writeln!(v.text, "integrity: GONE    {:016x} {} (was {}; not measurable now)", b.hash, b.name, b.detail);
                v.gone.push(b.name.clone());
            }
        }
    }
    for n in now.iter().filter(|n| !before.iter().any(|b| b.name == n.name)) {
        v.new += 1;
        let _ = writeln!(v.text, "integrity: new     {:016x} {} ({}; not in the snapshot)", n.hash, n.name, n.detail);
    }
    let _ = if v.unharmed() {
        writeln!(v.text, "integrity: unharmed: {} of {} items equal ({} new)", v.equal, before.len(), v.new)
    } else {
        writeln!(
            v.text,
            "integrity: HARMED: {} differ, {} gone, {} equal of {} items",
            v.differ.len(),
            v.gone.len(),
            v.equal,
            before.len()
        )
    };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, hash: u64) -> Item {
        Item { name: name.into(), hash, detail: "d".into() }
    }

    #[test]
    fn one_changed_word_or_byte_changes_the_hash() {
        let mut buf = alloc::vec![0u8; 4096 + 3];
        let base = hash_bytes(&buf);
        for i in [0, 7, 8, 4095, 4096, 4098] {
            buf[i] ^= 0x80;
            assert_ne!(hash_bytes(&buf), base, "flip at {i}");
            buf[i] ^= 0x80;
        }
        assert_eq!(hash_bytes(&buf), base);
        // Trailing zeros count: a longer region is another region.
        assert_ne!(hash_bytes(&[1, 0]), hash_bytes(&[1]));
        assert_ne!(hash_bytes(&[0u8; 16]), hash_bytes(&[0u8; 8]));
    }

    #[test]
    fn encode_decode_round_trip_and_errors_kept_apart() {
        let items = alloc::vec![item("L0 text", 0x1234), Item { name: "cpu 1 L1 RAM".into(), hash: u64::MAX, detail: "halted | 32 MiB".into() }];
        let mut text = encode(&items);
        text.push_str("error: cpu 3: the cpu did not answer\n");
        let (back, other) = decode(&text);
        assert_eq!(back, items);
        assert_eq!(other, alloc::vec![String::from("error: cpu 3: the cpu did not answer")]);
    }

    #[test]
    fn equal_measurements_are_unharmed() {
        let a = alloc::vec![item("L0 text", 1), item("cpu 0 VMCS0-1 host state", 2)];
        let v = compare(&a, &a);
        assert!(v.unharmed());
        assert_eq!(v.equal, 2);
        assert!(v.text.ends_with("integrity: unharmed: 2 of 2 items equal (0 new)\n"), "{}", v.text);
    }

    #[test]
    fn a_changed_hash_is_harm_and_named() {
        let v = compare(&[item("L0 text", 1), item("cpu 0 L1 RAM", 2)], &[item("L0 text", 1), item("cpu 0 L1 RAM", 3)]);
        assert!(!v.unharmed());
        assert_eq!(v.differ, alloc::vec![String::from("cpu 0 L1 RAM")]);
        assert!(v.text.contains("integrity: DIFFERS 0000000000000002 -> 0000000000000003 cpu 0 L1 RAM"), "{}", v.text);
        assert!(v.text.ends_with("integrity: HARMED: 1 differ, 0 gone, 1 equal of 2 items\n"), "{}", v.text);
    }

    #[test]
    fn a_region_no_longer_measurable_is_not_proven_and_new_ones_do_not_count() {
        let v = compare(&[item("cpu 0 L1 RAM", 2)], &[item("cpu 1 L1 RAM", 5)]);
        assert!(!v.unharmed());
        assert_eq!(v.gone, alloc::vec![String::from("cpu 0 L1 RAM")]);
        assert_eq!(v.new, 1);
        let v = compare(&[item("L0 text", 1)], &[item("L0 text", 1), item("cpu 1 L1 RAM", 5)]);
        assert!(v.unharmed());
        assert_eq!(v.new, 1);
    }
}
