//! Percent-encoding for Google REST URLs.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` percent-encoded as one URL path segment or one query value: every byte but letters,
/// digits, `-`, `.`, `_` and `~` becomes `%XX` (UTF-8 bytes for non-ASCII characters). So `/`
/// inside a GCS object name, `&`, `=`, `+`, `?`, `#`, `%` and spaces cannot change the URL's
/// structure.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}

/// `s` with its `%XX` escapes decoded (as gRPC's `grpc-message` is sent); an escape that is not
/// one stays as it is, and bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_characters_stay() {
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn everything_else_is_encoded() {
        assert_eq!(percent_encode("export/part 1.csv"), "export%2Fpart%201.csv");
        assert_eq!(percent_encode("a+b&c=d?e#f%g"), "a%2Bb%26c%3Dd%3Fe%23f%25g");
        assert_eq!(percent_encode("example.com:project"), "example.com%3Aproject");
        // A page token as BigQuery sends it.
        assert_eq!(percent_encode("BFH2K3/a+b=="), "BFH2K3%2Fa%2Bb%3D%3D");
    }

    #[test]
    fn non_ascii_is_utf8_bytes() {
        assert_eq!(percent_encode("größe"), "gr%C3%B6%C3%9Fe");
        assert_eq!(percent_encode("\n\0"), "%0A%00");
    }
}
