//! Call metadata: ordered key/value pairs sent alongside a message (headers and trailers).

use bytes::Bytes;

/// Key/value pairs carried with a request or response, like HTTP headers.
///
/// Keys are case-insensitive and stored lower-case; a key may appear more than once. Keys ending
/// in `-bin` hold binary values, all others hold text.
///
/// ```
/// use ferry::Metadata;
/// let mut md = Metadata::new();
/// md.insert("X-Tenant", "acme");
/// md.insert_bin("trace-bin", vec![0xde, 0xad]);
/// assert_eq!(md.get("x-tenant"), Some("acme"));
/// assert_eq!(md.get_bin("trace-bin"), Some(&[0xde, 0xad][..]));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, Bytes)>,
}

impl Metadata {
    /// Empty metadata; does not allocate.
    pub const fn new() -> Metadata {
        Metadata {
            entries: Vec::new(),
        }
    }

    /// Sets a text value, replacing any values already under `key`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = normalize(key.into());
        self.remove(&key);
        self.entries.push((key, Bytes::from(value.into())));
    }

    /// Adds a text value, keeping any values already under `key`.
    pub fn append(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries
            .push((normalize(key.into()), Bytes::from(value.into())));
    }

    /// Sets a binary value, replacing any values already under `key` (which should end in `-bin`).
    pub fn insert_bin(&mut self, key: impl Into<String>, value: impl Into<Bytes>) {
        let key = normalize(key.into());
        self.remove(&key);
        self.entries.push((key, value.into()));
    }

    /// Adds a raw value without normalizing the key; used by protocol decoders.
    pub(crate) fn append_raw(&mut self, key: String, value: Bytes) {
        self.entries.push((key, value));
    }

    /// The first text value under `key`, if present and valid UTF-8.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.get_bin(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value under `key` as raw bytes.
    pub fn get_bin(&self, key: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_ref())
    }

    /// Every value under `key`, in insertion order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_ref())
    }

    /// Removes every value under `key`; returns whether anything was removed.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        before != self.entries.len()
    }

    /// All entries as `(key, value)` pairs, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends every entry of `other`.
    pub fn extend(&mut self, other: Metadata) {
        self.entries.extend(other.entries);
    }

    /// Bytes this metadata occupies on the wire, keys plus values.
    pub fn encoded_size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// Whether `key` is a valid metadata key: non-empty, lower-case ASCII letters, digits, `-`, `_`, `.`.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'))
}

fn normalize(mut key: String) -> String {
    key.make_ascii_lowercase();
    key
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.entries {
            match std::str::from_utf8(v) {
                Ok(text) if !k.ends_with("-bin") => map.entry(k, &text),
                _ => map.entry(k, v),
            };
        }
        map.finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Metadata {
        let mut md = Metadata::new();
        for (k, v) in iter {
            md.append(k, v);
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_append_keeps() {
        let mut md = Metadata::new();
        md.append("a", "1");
        md.append("A", "2");
        assert_eq!(md.get_all("a").count(), 2);
        md.insert("a", "3");
        assert_eq!(md.get_all("a").collect::<Vec<_>>(), vec![b"3".as_ref()]);
        assert!(md.remove("a"));
        assert!(md.is_empty());
    }

    #[test]
    fn key_validation() {
        assert!(is_valid_key("x-request-id"));
        assert!(!is_valid_key("Upper"));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key("sp ace"));
    }
}
