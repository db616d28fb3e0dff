//! HPACK (RFC 7541), the header compression of HTTP/2, for the server side:
//! a [`Decoder`] for request header blocks and [`encode_response`] for
//! response header blocks.
//!
//! ## Decoder
//!
//! The decoder keeps the connection's dynamic table, which the peer's
//! encoder fills. Each entry is one `Box<[u8]>` holding name and value back
//! to back (plus the name's length) in a `VecDeque`, newest at the front.
//! When the table becomes empty (a size update to 0, an entry larger than
//! the table) its storage is released, so an idle connection whose peer
//! does not index holds nothing. The table never exceeds the size this
//! endpoint announced (`Decoder::set_max_table_size` evicts at once when
//! the limit drops).
//!
//! Fields are handed to a callback as slices: of the block itself for raw
//! strings, of a scratch buffer for Huffman-coded ones, of the tables for
//! indexed names and fields. Nothing is allocated but those scratch buffers
//! (bounded by the block's length) and the entries the peer indexes. A
//! header list over the caller's limit, or a field the caller refuses,
//! does not stop decoding: the rest of the block is still applied to the
//! dynamic table, which must stay in step with the peer's encoder for the
//! connection's later blocks.
//!
//! Huffman-coded strings are decoded four bits at a time through a state
//! table (256 states, one per internal node of the code tree, times 16
//! nibbles), computed at compile time from the code of RFC 7541 Appendix B.
//! Every input is checked: integers are capped, string lengths checked
//! against the block, indices against the tables, the Huffman padding and
//! EOS rejected; no input panics.
//!
//! ## Encoder
//!
//! The encoder is stateless: it never adds to the dynamic table (only
//! static-table indices and literals without indexing, or never indexed
//! for sensitive values), so there is no per-connection encoder table on
//! this side and the peer's decoder holds nothing for us. A dynamic table
//! would save some octets on headers repeated across responses, at the
//! cost of a table per connection (up to 4096 octets by default) and of an
//! exposure to compression oracles (RFC 7541 §7.1). Strings are
//! Huffman-coded when that is strictly shorter.

use std::collections::VecDeque;
use std::fmt;

use http::HeaderMap;

/// What [`Decoder::decode`] did with a well-formed header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Every field was passed to the callback.
    Complete,
    /// The header list grew past `max_list_size`: the fields from the
    /// one that crossed it on were not passed (the table was still updated).
    TooLarge,
    /// The callback refused a field: the later ones were not passed (the
    /// table was still updated).
    Refused,
}

/// A malformed header block: a connection error (COMPRESSION_ERROR),
/// since the dynamic table can no longer be trusted to match the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The block ends inside a representation.
    Truncated,
    /// An integer above the decoder's limit (about 2^28) or encoded in too
    /// many octets.
    IntegerOverflow,
    /// Index 0, or an index past the static and dynamic tables.
    BadIndex,
    /// A Huffman-coded string with the EOS symbol, padding longer than 7
    /// bits, or padding other than the most significant bits of EOS.
    BadHuffman,
    /// A dynamic table size update above the announced maximum.
    TableSizeTooLarge,
    /// A dynamic table size update after the block's first field.
    TableSizeUpdateMisplaced,
    /// A string literal longer than the whole header block.
    StringTooLong,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "header block ends inside a field",
            Self::IntegerOverflow => "integer too large in header block",
            Self::BadIndex => "header table index out of range",
            Self::BadHuffman => "invalid huffman-coded string",
            Self::TableSizeTooLarge => "dynamic table size update above the announced maximum",
            Self::TableSizeUpdateMisplaced => "dynamic table size update after a header field",
            Self::StringTooLong => "string literal longer than the header block",
        })
    }
}

impl std::error::Error for DecodeError {}

/// The overhead RFC 7541 §4.1 counts for each dynamic table entry (and
/// RFC 9113 §6.5.2 for each field of a header list).
const ENTRY_OVERHEAD: usize = 32;

/// The size of a field in the table or in a header list.
fn field_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + ENTRY_OVERHEAD
}

/// The decoding side of a connection's HPACK context: its dynamic table.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// The dynamic table, newest entry first.
    entries: VecDeque<Entry>,
    /// The sum of the entries' sizes.
    size: usize,
    /// The table's maximum size, as the peer's last size update set it.
    max_size: usize,
    /// The maximum this endpoint announced (SETTINGS_HEADER_TABLE_SIZE):
    /// the cap on `max_size`.
    limit: usize,
}

/// One dynamic table entry: name and value in one allocation.
#[derive(Debug)]
struct Entry {
    field: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Self {
        let mut field = Vec::with_capacity(name.len() + value.len());
        field.extend_from_slice(name);
        field.extend_from_slice(value);
        Self {
            field: field.into_boxed_slice(),
            name_len: name.len(),
        }
    }

    /// Name and value. `name_len <= field.len()` by construction.
    fn split(&self) -> (&[u8], &[u8]) {
        self.field.split_at(self.name_len)
    }

    fn size(&self) -> usize {
        self.field.len() + ENTRY_OVERHEAD
    }
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE this endpoint
    /// announced (the protocol's initial value is 4096).
    pub(crate) fn new(max_table_size: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size: max_table_size,
            limit: max_table_size,
        }
    }

    /// The announced limit changed (takes effect as the cap for the peer's
    /// size updates).
    ///
    /// Call it once the peer has acknowledged the SETTINGS frame carrying
    /// the new value. A lower limit also shrinks the table at once (the
    /// peer's encoder must do the same and signal a size update); a higher
    /// one waits for the peer's size update.
    #[cfg(test)]
    pub(crate) fn set_max_table_size(&mut self, max: usize) {
        self.limit = max;
        if self.max_size > max {
            self.max_size = max;
            self.evict_to(max);
        }
    }

    /// Bytes held by the dynamic table's entries (for tests and memory
    /// accounting).
    ///
    /// This is the RFC 7541 §4.1 size: each entry's name and value plus 32.
    #[cfg(test)]
    pub(crate) fn table_size(&self) -> usize {
        self.size
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments
    /// already joined), calling `field(name, value)` for each field in
    /// order, while the header list size (RFC 9113: sum of
    /// name.len()+value.len()+32) stays within `max_list_size`.
    ///
    /// Past that limit it keeps decoding (the dynamic table must stay in
    /// step with the peer's encoder) but stops calling `field`, and returns
    /// `Ok(Decoded::TooLarge)`. If `field` returns `Err(())`, decoding still
    /// continues to the end for table consistency, further calls are
    /// skipped, and the result is `Ok(Decoded::Refused)`. Whichever of the
    /// two happens first decides the result. Otherwise
    /// `Ok(Decoded::Complete)`.
    ///
    /// On `Err` the table is left part-way through the block: the
    /// connection must end (COMPRESSION_ERROR).
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        field: impl FnMut(&[u8], &[u8]) -> Result<(), ()>,
    ) -> Result<Decoded, DecodeError> {
        let mut input = Reader {
            rest: block,
            block_len: block.len(),
        };
        let mut list = List {
            field,
            size: 0,
            max_size: max_list_size,
            outcome: Decoded::Complete,
        };
        let mut name_buf = Vec::new();
        let mut value_buf = Vec::new();
        let mut seen_field = false;
        while let Some(&first) = input.rest.first() {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let (name, value) = self.lookup(input.integer(7)?)?;
                list.push(name, value);
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let (name, value) = self.literal(&mut input, 6, &mut name_buf, &mut value_buf)?;
                let entry = Entry::new(name, value);
                let (name, value) = entry.split();
                list.push(name, value);
                self.insert(entry);
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3), only ahead of the fields (§4.2).
                if seen_field {
                    return Err(DecodeError::TableSizeUpdateMisplaced);
                }
                let max_size = input.integer(5)?;
                if max_size > self.limit {
                    return Err(DecodeError::TableSizeTooLarge);
                }
                self.max_size = max_size;
                self.evict_to(max_size);
                continue;
            } else {
                // Literal without indexing (§6.2.2) or never indexed (§6.2.3):
                // the same to a decoder that does not re-encode.
                let (name, value) = self.literal(&mut input, 4, &mut name_buf, &mut value_buf)?;
                list.push(name, value);
            }
            seen_field = true;
        }
        Ok(list.outcome)
    }

    /// The field at an index of the combined address space (§2.3.3).
    fn lookup(&self, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
        let Some(index) = index.checked_sub(1) else {
            return Err(DecodeError::BadIndex);
        };
        match STATIC_TABLE.get(index) {
            Some(&(name, value)) => Ok((name.as_bytes(), value.as_bytes())),
            None => self
                .entries
                .get(index - STATIC_TABLE.len())
                .map(Entry::split)
                .ok_or(DecodeError::BadIndex),
        }
    }

    /// A literal representation's name (indexed on `prefix_bits`, or a
    /// string when the index is 0) and value.
    fn literal<'a, 'b: 'a>(
        &'a self,
        input: &mut Reader<'b>,
        prefix_bits: u32,
        name_buf: &'a mut Vec<u8>,
        value_buf: &'a mut Vec<u8>,
    ) -> Result<(&'a [u8], &'a [u8]), DecodeError> {
        let name = match input.integer(prefix_bits)? {
            0 => input.string(name_buf)?,
            index => self.lookup(index)?.0,
        };
        Ok((name, input.string(value_buf)?))
    }

    /// Adds an entry at the front, evicting from the back to make room; an
    /// entry larger than the table empties it and is dropped (§4.4).
    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        match self.max_size.checked_sub(size) {
            Some(room) => {
                self.evict_to(room);
                self.size += size;
                self.entries.push_front(entry);
            }
            None => self.evict_to(0),
        }
    }

    /// Evicts the oldest entries until the table's size is at most `max`
    /// (§4.3), releasing the storage if the table ends empty.
    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            let Some(entry) = self.entries.pop_back() else {
                break;
            };
            self.size -= entry.size();
        }
        if self.entries.is_empty() {
            self.entries = VecDeque::new();
        }
    }
}

/// The decoded header list on its way to the caller's callback.
struct List<F> {
    field: F,
    /// The header list's size so far (RFC 9113 §6.5.2).
    size: usize,
    max_size: usize,
    outcome: Decoded,
}

impl<F: FnMut(&[u8], &[u8]) -> Result<(), ()>> List<F> {
    /// Passes a field on, unless the list is already over its limit or
    /// refused, or this field takes it over the limit.
    fn push(&mut self, name: &[u8], value: &[u8]) {
        if self.outcome != Decoded::Complete {
            return;
        }
        self.size = self.size.saturating_add(field_size(name, value));
        if self.size > self.max_size {
            self.outcome = Decoded::TooLarge;
        } else if (self.field)(name, value).is_err() {
            self.outcome = Decoded::Refused;
        }
    }
}

/// A cursor over a header block.
struct Reader<'b> {
    rest: &'b [u8],
    block_len: usize,
}

impl<'b> Reader<'b> {
    /// An integer on a prefix of `prefix_bits` bits (§5.1), the rest of its
    /// first octet being the representation's pattern. At most four
    /// continuation octets: the value stays below 2^28 + 2^8.
    fn integer(&mut self, prefix_bits: u32) -> Result<usize, DecodeError> {
        let (&first, rest) = self.rest.split_first().ok_or(DecodeError::Truncated)?;
        self.rest = rest;
        let mask = 0xff >> (8 - prefix_bits);
        let mut value = usize::from(first & mask);
        if value < usize::from(mask) {
            return Ok(value);
        }
        for shift in [0, 7, 14, 21] {
            let (&byte, rest) = self.rest.split_first().ok_or(DecodeError::Truncated)?;
            self.rest = rest;
            value += usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::IntegerOverflow)
    }

    /// A string literal (§5.2): raw, borrowed from the block, or
    /// Huffman-coded, decoded into `buf`.
    fn string<'a>(&mut self, buf: &'a mut Vec<u8>) -> Result<&'a [u8], DecodeError>
    where
        'b: 'a,
    {
        let huffman = self.rest.first().is_some_and(|&b| b & 0x80 != 0);
        let len = self.integer(7)?;
        if len > self.block_len {
            return Err(DecodeError::StringTooLong);
        }
        let (data, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or(DecodeError::Truncated)?;
        self.rest = rest;
        if huffman {
            huffman_decode(data, buf)?;
            Ok(buf)
        } else {
            Ok(data)
        }
    }
}

/// Appends the header block for a response: `:status` then each header.
///
/// Only static-table indices and literals that are not indexed: the
/// peer's dynamic table stays empty. Sensitive values (`set-cookie`,
/// `cookie`, `authorization`, `proxy-authorization`, or marked with
/// [`http::HeaderValue::set_sensitive`]) go as never indexed, so that no
/// intermediary compresses them either (§7.1.3).
pub(crate) fn encode_response(status: u16, headers: &HeaderMap, out: &mut Vec<u8>) {
    match status {
        200 => out.push(0x80 | 8),
        204 => out.push(0x80 | 9),
        206 => out.push(0x80 | 10),
        304 => out.push(0x80 | 11),
        400 => out.push(0x80 | 12),
        404 => out.push(0x80 | 13),
        500 => out.push(0x80 | 14),
        _ => {
            // Literal without indexing, name `:status` (index 8).
            out.push(0x08);
            let mut digits = [0; 5];
            let mut start = digits.len();
            let mut rest = status;
            loop {
                start -= 1;
                digits[start] = b'0' + (rest % 10) as u8;
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            encode_string(&digits[start..], out);
        }
    }
    encode_fields(headers, out);
}

/// Appends the header block of a response's trailers (no pseudo-fields).
pub(crate) fn encode_fields(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        let name = name.as_str();
        let sensitive = value.is_sensitive()
            || matches!(
                name,
                "set-cookie" | "cookie" | "authorization" | "proxy-authorization"
            );
        // Never indexed (§6.2.3) or without indexing (§6.2.2).
        let pattern = if sensitive { 0x10 } else { 0x00 };
        match STATIC_TABLE.iter().position(|&(n, _)| n == name) {
            Some(index) => encode_integer(index + 1, 4, pattern, out),
            None => {
                out.push(pattern);
                encode_string(name.as_bytes(), out);
            }
        }
        encode_string(value.as_bytes(), out);
    }
}

/// Appends an integer on a prefix of `prefix_bits` bits (§5.1), the first
/// octet's other bits being `pattern`.
fn encode_integer(value: usize, prefix_bits: u32, pattern: u8, out: &mut Vec<u8>) {
    let max = (1 << prefix_bits) - 1;
    if value < max {
        out.push(pattern | value as u8);
        return;
    }
    out.push(pattern | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Appends a string literal (§5.2): Huffman-coded when that is strictly
/// shorter, raw otherwise.
fn encode_string(bytes: &[u8], out: &mut Vec<u8>) {
    let bits: usize = bytes
        .iter()
        .map(|&b| usize::from(HUFFMAN[usize::from(b)].1))
        .sum();
    let huffman_len = bits.div_ceil(8);
    if huffman_len < bytes.len() {
        encode_integer(huffman_len, 7, 0x80, out);
        huffman_encode(bytes, out);
    } else {
        encode_integer(bytes.len(), 7, 0x00, out);
        out.extend_from_slice(bytes);
    }
}

/// Appends the Huffman code of `bytes`, padded with the most significant
/// bits of EOS (all ones) to an octet boundary.
fn huffman_encode(bytes: &[u8], out: &mut Vec<u8>) {
    // The pending bits are the low `pending` bits of `bits` (fewer than 8
    // between symbols; codes are at most 30 bits, so 37 at most).
    let mut bits: u64 = 0;
    let mut pending = 0;
    for &b in bytes {
        let (code, len) = HUFFMAN[usize::from(b)];
        bits = (bits << len) | u64::from(code);
        pending += u32::from(len);
        while pending >= 8 {
            pending -= 8;
            out.push((bits >> pending) as u8);
        }
    }
    if pending > 0 {
        out.push((bits << (8 - pending)) as u8 | (0xff >> pending));
    }
}

/// Decodes a Huffman-coded string into `out` (cleared first).
fn huffman_decode(data: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.clear();
    // At most 8/5 symbols per octet: the shortest codes have 5 bits.
    out.reserve(data.len() / 5 * 8 + 8);
    let mut state = 0;
    let mut accept = true;
    for &byte in data {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = HUFFMAN_STEPS[usize::from(state)][usize::from(nibble)];
            if step.flags & STEP_FAIL != 0 {
                return Err(DecodeError::BadHuffman);
            }
            if step.flags & STEP_EMIT != 0 {
                out.push(step.symbol);
            }
            state = step.next;
            accept = step.flags & STEP_ACCEPT != 0;
        }
    }
    if accept {
        Ok(())
    } else {
        Err(DecodeError::BadHuffman)
    }
}

/// One transition of the Huffman decoder: from a state (an internal node
/// of the code tree, 0 the root) on four bits of input.
#[derive(Clone, Copy)]
struct Step {
    /// The state after the four bits.
    next: u8,
    /// The symbol completed on the way, if `STEP_EMIT`.
    symbol: u8,
    flags: u8,
}

/// The four bits completed a symbol (at most one: codes have 5 bits or more).
const STEP_EMIT: u8 = 1;
/// The four bits completed EOS: an error inside a string.
const STEP_FAIL: u8 = 2;
/// The string may end in the new state: the bits since the last symbol
/// are at most 7 ones, a prefix of EOS (§5.2).
const STEP_ACCEPT: u8 = 4;

/// The Huffman decoder's transitions, by state and nibble.
static HUFFMAN_STEPS: [[Step; 16]; 256] = huffman_steps();

/// Builds [`HUFFMAN_STEPS`] from [`HUFFMAN`]. A code with 257 symbols
/// has 256 internal nodes: the states. Fails to compile if the table is
/// not a complete prefix code.
const fn huffman_steps() -> [[Step; 16]; 256] {
    // The code tree: the children of each internal node, `LEAF | symbol`
    // for a leaf. 0 marks a child not yet made (the root is no one's child).
    const LEAF: u16 = 0x8000;
    let mut children = [[0u16; 2]; 256];
    let mut nodes = 1;
    let mut symbol = 0;
    while symbol < HUFFMAN.len() {
        let (code, mut depth) = HUFFMAN[symbol];
        let mut node = 0;
        while depth > 1 {
            depth -= 1;
            let bit = ((code >> depth) & 1) as usize;
            if children[node][bit] == 0 {
                children[node][bit] = nodes as u16;
                nodes += 1;
            }
            node = children[node][bit] as usize;
        }
        children[node][(code & 1) as usize] = LEAF | symbol as u16;
        symbol += 1;
    }
    assert!(nodes == 256, "the Huffman table is not a complete code");

    // The states a string may end in: the root and the nodes along the
    // all-ones path, up to 7 bits deep.
    let mut accepting = [false; 256];
    accepting[0] = true;
    let mut node = 0;
    let mut depth = 0;
    while depth < 7 {
        node = children[node][1] as usize;
        accepting[node] = true;
        depth += 1;
    }

    let mut steps = [[Step {
        next: 0,
        symbol: 0,
        flags: 0,
    }; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut step = Step {
                next: 0,
                symbol: 0,
                flags: 0,
            };
            let mut node = state;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let child = children[node][(nibble >> bit) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                } else {
                    if child == LEAF | 256 {
                        step.flags |= STEP_FAIL;
                    } else {
                        step.flags |= STEP_EMIT;
                        step.symbol = child as u8;
                    }
                    node = 0;
                }
            }
            step.next = node as u8;
            if accepting[node] {
                step.flags |= STEP_ACCEPT;
            }
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    steps
}

/// The static table (RFC 7541 Appendix A); index `i + 1` is `STATIC_TABLE[i]`.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The Huffman code (RFC 7541 Appendix B) by symbol, 256 being EOS: the
/// code aligned to the least significant bit, and its length in bits.
#[rustfmt::skip]
const HUFFMAN: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28),      // 0-3
    (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),  // 4-7
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),  // 8-11
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28), // 12-15
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),  // 16-19
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28), // 20-23
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28),  // 24-27
    (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),  // 28-31
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),                    // 32-35: ' ' ! " #
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),                     // 36-39: $ % & '
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11),                    // 40-43: ( ) * +
    (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),                          // 44-47: , - . /
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),                             // 48-51: 0 1 2 3
    (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),                          // 52-55: 4 5 6 7
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),                          // 56-59: 8 9 : ;
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),                   // 60-63: < = > ?
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7),                       // 64-67: @ A B C
    (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),                          // 68-71: D E F G
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),                          // 72-75: H I J K
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),                          // 76-79: L M N O
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),                          // 80-83: P Q R S
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),                          // 84-87: T U V W
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13),                       // 88-91: X Y Z [
    (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),                // 92-95: \ ] ^ _
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5),                         // 96-99: ` a b c
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),                           // 100-103: d e f g
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),                           // 104-107: h i j k
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),                           // 108-111: l m n o
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5),                           // 112-115: p q r s
    (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),                           // 116-119: t u v w
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15),                       // 120-123: x y z {
    (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),            // 124-127
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),         // 128-131
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),      // 132-135
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),      // 136-139
    (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),      // 140-143
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23),      // 144-147
    (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),      // 148-151
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),      // 152-155
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),      // 156-159
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),       // 160-163
    (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),      // 164-167
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),      // 168-171
    (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),      // 172-175
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),      // 176-179
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),      // 180-183
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),       // 184-187
    (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),      // 188-191
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),      // 192-195
    (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),     // 196-199
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),  // 200-203
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),   // 204-207
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),     // 208-211
    (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),   // 212-215
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26),    // 216-219
    (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),  // 220-223
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),        // 224-227
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),      // 228-231
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25),    // 232-235
    (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),     // 236-239
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26),  // 240-243
    (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),  // 244-247
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),  // 248-251
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),  // 252-255
    (0x3fffffff, 30),                                                    // 256: EOS
];

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::{HeaderName, HeaderValue};

    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;
    type Expected = &'static [(&'static str, &'static str)];

    /// Bytes from the RFC's hex dumps (whitespace ignored).
    fn hex(dump: &str) -> Vec<u8> {
        let digits: Vec<u8> = dump.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Decodes without a list limit, collecting the fields.
    fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, DecodeError> {
        let mut out = Vec::new();
        let outcome = decoder.decode(block, usize::MAX, |n, v| {
            out.push((n.to_vec(), v.to_vec()));
            Ok(())
        })?;
        assert_eq!(outcome, Decoded::Complete);
        Ok(out)
    }

    /// Decodes a connection's consecutive blocks: each one's fields and the
    /// table size after it.
    fn check_blocks(table_size: usize, blocks: &[(&str, Expected, usize)]) {
        let mut decoder = Decoder::new(table_size);
        for &(dump, expected, size) in blocks {
            assert_eq!(decode_all(&mut decoder, &hex(dump)), Ok(fields(expected)));
            assert_eq!(decoder.table_size(), size);
        }
    }

    const REQUEST_1: Expected = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    const REQUEST_2: Expected = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    const REQUEST_3: Expected = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    const RESPONSE_1: Expected = &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    const RESPONSE_2: Expected = &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    const RESPONSE_3: Expected = &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ];

    const C2_1: &str = "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572";
    const C2_2: &str = "040c 2f73 616d 706c 652f 7061 7468";
    const C2_3: &str = "1008 7061 7373 776f 7264 0673 6563 7265 74";

    const C3: [&str; 3] = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    const C4: [&str; 3] = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    const C5: [&str; 3] = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ];
    const C6: [&str; 3] = [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];

    #[test]
    fn rfc_c2_1_literal_with_indexing() {
        check_blocks(4096, &[(C2_1, &[("custom-key", "custom-header")], 55)]);
    }

    #[test]
    fn rfc_c2_2_literal_without_indexing() {
        check_blocks(4096, &[(C2_2, &[(":path", "/sample/path")], 0)]);
    }

    #[test]
    fn rfc_c2_3_literal_never_indexed() {
        check_blocks(4096, &[(C2_3, &[("password", "secret")], 0)]);
    }

    #[test]
    fn rfc_c2_4_indexed() {
        check_blocks(4096, &[("82", &[(":method", "GET")], 0)]);
    }

    #[test]
    fn rfc_c3_requests() {
        check_blocks(
            4096,
            &[
                (C3[0], REQUEST_1, 57),
                (C3[1], REQUEST_2, 110),
                (C3[2], REQUEST_3, 164),
            ],
        );
    }

    #[test]
    fn rfc_c4_requests_huffman() {
        check_blocks(
            4096,
            &[
                (C4[0], REQUEST_1, 57),
                (C4[1], REQUEST_2, 110),
                (C4[2], REQUEST_3, 164),
            ],
        );
    }

    #[test]
    fn rfc_c5_responses_with_eviction() {
        check_blocks(
            256,
            &[
                (C5[0], RESPONSE_1, 222),
                (C5[1], RESPONSE_2, 222),
                (C5[2], RESPONSE_3, 215),
            ],
        );
    }

    #[test]
    fn rfc_c6_responses_huffman_with_eviction() {
        check_blocks(
            256,
            &[
                (C6[0], RESPONSE_1, 222),
                (C6[1], RESPONSE_2, 222),
                (C6[2], RESPONSE_3, 215),
            ],
        );
    }

    #[test]
    fn huffman_table_is_a_canonical_complete_code() {
        // Kraft's sum is exactly 1 (the code is complete), and the codes
        // follow from the lengths as a canonical code: a check of the
        // table's transcription, the two columns against each other.
        let kraft: u64 = HUFFMAN.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
        assert_eq!(kraft, 1 << 30);
        let mut symbols: Vec<usize> = (0..HUFFMAN.len()).collect();
        symbols.sort_by_key(|&s| (HUFFMAN[s].1, s));
        let mut code = 0u32;
        let mut len = HUFFMAN[symbols[0]].1;
        for (i, &s) in symbols.iter().enumerate() {
            if i > 0 {
                code = (code + 1) << (HUFFMAN[s].1 - len);
                len = HUFFMAN[s].1;
            }
            assert_eq!(HUFFMAN[s].0, code, "symbol {s}");
        }
    }

    #[test]
    fn huffman_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut strings = vec![Vec::new(), all.clone(), all.iter().rev().copied().collect()];
        strings.extend(all.iter().map(|&b| vec![b]));
        strings.extend((1..40).map(|n| b"www.example.com/".repeat(n)[..n].to_vec()));
        let mut decoded = Vec::new();
        for s in strings {
            let mut coded = Vec::new();
            huffman_encode(&s, &mut coded);
            let bits: usize = s
                .iter()
                .map(|&b| usize::from(HUFFMAN[usize::from(b)].1))
                .sum();
            assert_eq!(coded.len(), bits.div_ceil(8));
            huffman_decode(&coded, &mut decoded).unwrap();
            assert_eq!(decoded, s);
        }
    }

    /// A literal without indexing, new name, its name Huffman-coded.
    fn huffman_name(coded: &[u8]) -> Vec<u8> {
        let mut block = vec![0x00, 0x80 | coded.len() as u8];
        block.extend_from_slice(coded);
        block.push(0x00);
        block
    }

    #[test]
    fn huffman_padding_and_eos() {
        let mut decoder = Decoder::new(4096);
        // 'a' (00011) and 3 bits of padding, all ones: valid.
        assert_eq!(
            decode_all(&mut decoder, &huffman_name(&[0x1f])),
            Ok(fields(&[("a", "")]))
        );
        // Zero padding bits (not a prefix of EOS).
        assert_eq!(
            decode_all(&mut decoder, &huffman_name(&[0x18])),
            Err(DecodeError::BadHuffman)
        );
        // Padding of ones mixed with a zero.
        assert_eq!(
            decode_all(&mut decoder, &huffman_name(&[0x1d])),
            Err(DecodeError::BadHuffman)
        );
        // 8 bits of padding alone, then 11 after 'a'.
        assert_eq!(
            decode_all(&mut decoder, &huffman_name(&[0xff])),
            Err(DecodeError::BadHuffman)
        );
        assert_eq!(
            decode_all(&mut decoder, &huffman_name(&[0x1f, 0xff])),
            Err(DecodeError::BadHuffman)
        );
        // EOS (30 ones) and 2 bits of padding; EOS after 'a'.
        assert_eq!(
            decode_all(&mut decoder, &huffman_name(&[0xff; 4])),
            Err(DecodeError::BadHuffman)
        );
        assert_eq!(
            decode_all(&mut decoder, &huffman_name(&[0x1f, 0xff, 0xff, 0xff, 0xfe])),
            Err(DecodeError::BadHuffman)
        );
        // A string ending exactly on an octet boundary needs no padding:
        // '0' '0' '0' '0' 'a' 'a' 'a' 'a' are 8 codes of 5 bits.
        let mut coded = Vec::new();
        huffman_encode(b"0000aaaa", &mut coded);
        assert_eq!(coded.len(), 5);
        assert_eq!(
            decode_all(&mut decoder, &huffman_name(&coded)),
            Ok(fields(&[("0000aaaa", "")]))
        );
        // An empty Huffman-coded string.
        assert_eq!(
            decode_all(&mut decoder, &huffman_name(&[])),
            Ok(fields(&[("", "")]))
        );
    }

    #[test]
    fn index_zero_is_rejected() {
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut decoder, &[0x80]),
            Err(DecodeError::BadIndex)
        );
    }

    #[test]
    fn index_past_the_tables_is_rejected() {
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut decoder, &[0xbe]),
            Err(DecodeError::BadIndex)
        );
        // An indexed name past the tables.
        assert_eq!(
            decode_all(&mut decoder, &[0x7e, 0x00]),
            Err(DecodeError::BadIndex)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0x0f, 0x2f, 0x00]),
            Err(DecodeError::BadIndex)
        );
        // With one entry, 62 is valid and 63 is not.
        let mut decoder = Decoder::new(4096);
        decode_all(&mut decoder, &hex(C2_1)).unwrap();
        assert_eq!(
            decode_all(&mut decoder, &[0xbe]),
            Ok(fields(&[("custom-key", "custom-header")]))
        );
        assert_eq!(
            decode_all(&mut decoder, &[0xbf]),
            Err(DecodeError::BadIndex)
        );
        // The largest index the decoder reads: still just out of range.
        assert_eq!(
            decode_all(&mut decoder, &[0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(DecodeError::BadIndex)
        );
    }

    #[test]
    fn integer_overflow_is_rejected() {
        let mut decoder = Decoder::new(4096);
        // A fifth continuation octet.
        assert_eq!(
            decode_all(&mut decoder, &[0xff, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(DecodeError::IntegerOverflow)
        );
        // A long run of continuation octets, in each kind of integer.
        for first in [0xff, 0x7f, 0x3f, 0x1f, 0x0f] {
            let mut block = vec![first];
            block.extend_from_slice(&[0xff; 64]);
            assert_eq!(
                decode_all(&mut decoder, &block),
                Err(DecodeError::IntegerOverflow)
            );
        }
        // A string length.
        let mut block = vec![0x00, 0x7f];
        block.extend_from_slice(&[0xff; 64]);
        assert_eq!(
            decode_all(&mut decoder, &block),
            Err(DecodeError::IntegerOverflow)
        );
    }

    #[test]
    fn truncated_and_overlong_strings_are_rejected() {
        let mut decoder = Decoder::new(4096);
        // The block ends in an integer's continuation.
        assert_eq!(
            decode_all(&mut decoder, &[0xff]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0xff, 0x80]),
            Err(DecodeError::Truncated)
        );
        // Before a name, inside a name, before a value.
        assert_eq!(
            decode_all(&mut decoder, &[0x40]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0x40, 0x03, b'a']),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_all(&mut decoder, &[0x40, 0x01, b'a']),
            Err(DecodeError::Truncated)
        );
        // A length past the whole block.
        assert_eq!(
            decode_all(&mut decoder, &[0x40, 0x7f, 0x80, 0x01, b'a']),
            Err(DecodeError::StringTooLong)
        );
        assert_eq!(decoder.table_size(), 0);
    }

    #[test]
    fn table_size_updates() {
        let mut decoder = Decoder::new(4096);
        for dump in C3 {
            decode_all(&mut decoder, &hex(dump)).unwrap();
        }
        assert_eq!(decoder.table_size(), 164);
        // Up to the announced maximum (4096 = 31 + 97 + 31 * 128).
        assert_eq!(decode_all(&mut decoder, &[0x3f, 0xe1, 0x1f]), Ok(vec![]));
        assert_eq!(decoder.table_size(), 164);
        // One more is too large.
        assert_eq!(
            decode_all(&mut decoder, &[0x3f, 0xe2, 0x1f]),
            Err(DecodeError::TableSizeTooLarge)
        );
        // After a field: misplaced, even if valid.
        assert_eq!(
            decode_all(&mut decoder, &[0x82, 0x20]),
            Err(DecodeError::TableSizeUpdateMisplaced)
        );
        // Two updates then a field: down to 110 evicts the oldest
        // (:authority), then back up; index 64 is now out of range.
        assert_eq!(
            decode_all(&mut decoder, &[0x3f, 0x4f, 0x3f, 0xe1, 0x1f, 0xc0]),
            Err(DecodeError::BadIndex)
        );
        assert_eq!(decoder.table_size(), 107);
        // To 0: the table is emptied and its storage released.
        assert_eq!(
            decode_all(&mut decoder, &[0x20, 0x82]),
            Ok(fields(&[(":method", "GET")]))
        );
        assert_eq!(decoder.table_size(), 0);
        assert_eq!(decoder.entries.capacity(), 0);
        // Entries are refused (too large) until the size is raised again.
        decode_all(&mut decoder, &hex(C2_1)).unwrap();
        assert_eq!(decoder.table_size(), 0);
        assert_eq!(decoder.entries.capacity(), 0);
        decode_all(&mut decoder, &[0x3f, 0xe1, 0x1f]).unwrap();
        decode_all(&mut decoder, &hex(C2_1)).unwrap();
        assert_eq!(decoder.table_size(), 55);
    }

    #[test]
    fn lowering_the_announced_maximum() {
        let mut decoder = Decoder::new(4096);
        for dump in C3 {
            decode_all(&mut decoder, &hex(dump)).unwrap();
        }
        // Evicts at once down to the new limit, oldest first.
        decoder.set_max_table_size(110);
        assert_eq!(decoder.table_size(), 107);
        assert_eq!(
            decode_all(&mut decoder, &[0x3f, 0x50]),
            Err(DecodeError::TableSizeTooLarge)
        );
        decode_all(&mut decoder, &[0x3f, 0x4f]).unwrap();
        // Raising it lets the peer raise its size, not more.
        decoder.set_max_table_size(4096);
        decode_all(&mut decoder, &[0x3f, 0xe1, 0x1f]).unwrap();
        decoder.set_max_table_size(0);
        assert_eq!(decoder.table_size(), 0);
        assert_eq!(decoder.entries.capacity(), 0);
        assert_eq!(
            decode_all(&mut decoder, &[0x21]),
            Err(DecodeError::TableSizeTooLarge)
        );
    }

    #[test]
    fn entry_larger_than_the_table_empties_it() {
        let mut decoder = Decoder::new(100);
        decode_all(&mut decoder, &hex(C2_1)).unwrap();
        assert_eq!(decoder.table_size(), 55);
        // 10 + 60 + 32 > 100: the field is decoded, the table emptied.
        let mut block = vec![0x40, 0x0a];
        block.extend_from_slice(b"custom-big");
        block.push(60);
        block.extend_from_slice(&[b'x'; 60]);
        let decoded = decode_all(&mut decoder, &block).unwrap();
        assert_eq!(decoded, vec![(b"custom-big".to_vec(), vec![b'x'; 60])]);
        assert_eq!(decoder.table_size(), 0);
        assert_eq!(decoder.entries.capacity(), 0);
        assert_eq!(
            decode_all(&mut decoder, &[0xbe]),
            Err(DecodeError::BadIndex)
        );
    }

    #[test]
    fn an_entry_may_name_the_entry_it_evicts() {
        // Room for one entry: the new one takes its name from the one it
        // evicts (§4.4).
        let mut decoder = Decoder::new(60);
        decode_all(&mut decoder, &hex(C2_1)).unwrap();
        let block = [0x7e, 0x03, b'a', b'b', b'c'];
        assert_eq!(
            decode_all(&mut decoder, &block),
            Ok(fields(&[("custom-key", "abc")]))
        );
        assert_eq!(decoder.table_size(), 45);
        assert_eq!(
            decode_all(&mut decoder, &[0xbe]),
            Ok(fields(&[("custom-key", "abc")]))
        );
    }

    #[test]
    fn list_limit_keeps_the_table_in_step() {
        for blocks in [C5, C6] {
            let mut limited = Decoder::new(256);
            let mut unlimited = Decoder::new(256);
            for (dump, expected) in blocks.iter().zip([RESPONSE_1, RESPONSE_2, RESPONSE_3]) {
                let block = hex(dump);
                // :status and cache-control fit in 100 (42 + 52), date does not.
                let mut seen = Vec::new();
                let outcome = limited.decode(&block, 100, |n, v| {
                    seen.push((n.to_vec(), v.to_vec()));
                    Ok(())
                });
                assert_eq!(outcome, Ok(Decoded::TooLarge));
                assert_eq!(seen, fields(&expected[..2]));
                assert_eq!(decode_all(&mut unlimited, &block), Ok(fields(expected)));
                assert_eq!(limited.table_size(), unlimited.table_size());
            }
            // Still in step: a later block decodes the same.
            let block = hex(blocks[1]);
            assert_eq!(
                decode_all(&mut limited, &block),
                decode_all(&mut unlimited, &block)
            );
        }
        // A list exactly at the limit is complete.
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decoder.decode(&[0x82], 42, |_, _| Ok(())),
            Ok(Decoded::Complete)
        );
        assert_eq!(
            decoder.decode(&[0x82], 41, |_, _| Ok(())),
            Ok(Decoded::TooLarge)
        );
    }

    #[test]
    fn refused_field_stops_calls_but_not_decoding() {
        let mut decoder = Decoder::new(256);
        let mut calls = 0;
        let outcome = decoder.decode(&hex(C5[0]), usize::MAX, |_, _| {
            calls += 1;
            if calls == 2 { Err(()) } else { Ok(()) }
        });
        assert_eq!(outcome, Ok(Decoded::Refused));
        assert_eq!(calls, 2);
        assert_eq!(decoder.table_size(), 222);
        assert_eq!(
            decode_all(&mut decoder, &hex(C5[1])),
            Ok(fields(RESPONSE_2))
        );
        // A refusal before the limit is crossed stays a refusal.
        let outcome = decoder.decode(&hex(C5[1]), 50, |_, _| Err(()));
        assert_eq!(outcome, Ok(Decoded::Refused));
    }

    #[test]
    fn truncated_blocks_fail_or_decode_a_prefix() {
        // Single representations: every strict prefix is an error.
        for dump in [
            C2_1,
            C2_2,
            C2_3,
            "4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ] {
            let block = hex(dump);
            for cut in 1..block.len() {
                let mut decoder = Decoder::new(4096);
                assert!(
                    decode_all(&mut decoder, &block[..cut]).is_err(),
                    "{dump} cut at {cut}"
                );
            }
        }
        // Whole blocks, each after its predecessors: an error, or (cut
        // between representations) the first fields.
        for (size, blocks) in [(4096, C3), (4096, C4), (256, C5), (256, C6)] {
            for (i, dump) in blocks.iter().enumerate() {
                let block = hex(dump);
                let before = || {
                    let mut decoder = Decoder::new(size);
                    for earlier in &blocks[..i] {
                        decode_all(&mut decoder, &hex(earlier)).unwrap();
                    }
                    decoder
                };
                let full = decode_all(&mut before(), &block).unwrap();
                for cut in 0..block.len() {
                    if let Ok(got) = decode_all(&mut before(), &block[..cut]) {
                        assert!(got.len() < full.len() && full.starts_with(&got));
                    }
                }
            }
        }
    }

    #[test]
    fn decode_errors_display() {
        let all = [
            DecodeError::Truncated,
            DecodeError::IntegerOverflow,
            DecodeError::BadIndex,
            DecodeError::BadHuffman,
            DecodeError::TableSizeTooLarge,
            DecodeError::TableSizeUpdateMisplaced,
            DecodeError::StringTooLong,
        ];
        let messages: Vec<String> = all.iter().map(ToString::to_string).collect();
        for (i, m) in messages.iter().enumerate() {
            assert!(!m.is_empty() && *m == m.to_lowercase());
            assert!(!messages[..i].contains(m));
        }
    }

    #[test]
    fn common_statuses_are_indexed() {
        for (status, byte) in [
            (200, 0x88),
            (204, 0x89),
            (206, 0x8a),
            (304, 0x8b),
            (400, 0x8c),
            (404, 0x8d),
            (500, 0x8e),
        ] {
            let mut out = Vec::new();
            encode_response(status, &HeaderMap::new(), &mut out);
            assert_eq!(out, [byte]);
        }
    }

    #[test]
    fn other_statuses_are_literals_on_the_status_name() {
        // 302 as in RFC 7541 C.6.1, without indexing: Huffman "302" is shorter.
        let mut out = Vec::new();
        encode_response(302, &HeaderMap::new(), &mut out);
        assert_eq!(out, [0x08, 0x82, 0x64, 0x02]);
        for status in [100, 101, 201, 307, 418, 503, 999, 7, 65535] {
            let mut out = Vec::new();
            encode_response(status, &HeaderMap::new(), &mut out);
            let text = status.to_string();
            assert_eq!(
                decode_all(&mut Decoder::new(4096), &out),
                Ok(fields(&[(":status", &text)]))
            );
        }
    }

    #[test]
    fn strings_are_huffman_coded_only_when_shorter() {
        let cases: [(&[u8], bool); 6] = [
            (b"aaaa", true),  // 20 bits: 3 octets for 4
            (b"&&&&", false), // 32 bits: as long as raw
            (b"aaa&", true),  // 23 bits: 3 octets for 4
            (b"", false),     // nothing to save
            (&[0x80, 0xff, 0x00], false),
            (b"text/html; charset=utf-8", true),
        ];
        for (s, huffman) in cases {
            let mut out = Vec::new();
            encode_string(s, &mut out);
            assert_eq!(out[0] & 0x80 != 0, huffman, "{s:?}");
            let mut reader = Reader {
                rest: &out,
                block_len: out.len(),
            };
            let mut buf = Vec::new();
            assert_eq!(reader.string(&mut buf), Ok(s));
            assert!(reader.rest.is_empty());
        }
    }

    #[test]
    fn sensitive_headers_are_never_indexed() {
        let mut secret = HeaderValue::from_static("s3cr3t");
        secret.set_sensitive(true);
        let cases = [
            ("set-cookie", HeaderValue::from_static("a=b"), true),
            ("cookie", HeaderValue::from_static("a=b"), true),
            ("authorization", HeaderValue::from_static("Basic x"), true),
            (
                "proxy-authorization",
                HeaderValue::from_static("Basic x"),
                true,
            ),
            ("x-token", secret, true),
            (
                "content-type",
                HeaderValue::from_static("text/plain"),
                false,
            ),
            ("x-custom", HeaderValue::from_static("v"), false),
        ];
        for (name, value, sensitive) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(HeaderName::from_static(name), value.clone());
            let mut out = Vec::new();
            encode_response(200, &headers, &mut out);
            assert_eq!(out[0], 0x88);
            assert_eq!(out[1] & 0xf0, if sensitive { 0x10 } else { 0x00 }, "{name}");
            let mut decoder = Decoder::new(4096);
            let expected = vec![
                (b":status".to_vec(), b"200".to_vec()),
                (name.as_bytes().to_vec(), value.as_bytes().to_vec()),
            ];
            assert_eq!(decode_all(&mut decoder, &out), Ok(expected));
        }
    }

    #[test]
    fn static_names_are_indexed() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("x"));
        headers.insert("age", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_response(404, &headers, &mut out);
        // content-type is 31 (15 + 16), age 21 (15 + 6), on 4-bit prefixes.
        assert_eq!(out, [0x8d, 0x0f, 0x10, 0x01, b'x', 0x0f, 0x06, 0x01, b'1']);
    }

    #[test]
    fn responses_round_trip() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert("content-length", HeaderValue::from_static("1234"));
        headers.insert("server", HeaderValue::from_static("gateway"));
        headers.append(
            "set-cookie",
            HeaderValue::from_static("a=1; Secure; HttpOnly"),
        );
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.insert(
            "x-request-id",
            HeaderValue::from_static("0af7651916cd43dd8448eb211c80319c"),
        );
        headers.insert("x-empty", HeaderValue::from_static(""));
        headers.insert(
            "x-bytes",
            HeaderValue::from_bytes(&[0x80, 0xfe, 0xff, b'a', 0xc3, 0xa9]).unwrap(),
        );
        headers.insert(
            "x-long",
            HeaderValue::from_str(&"0123456789abcdef".repeat(40)).unwrap(),
        );
        let mut secret = HeaderValue::from_static("token");
        secret.set_sensitive(true);
        headers.insert("x-secret", secret);
        for status in [200, 503] {
            let mut out = Vec::new();
            encode_response(status, &headers, &mut out);
            let mut expected = vec![(b":status".to_vec(), status.to_string().into_bytes())];
            expected.extend(
                headers
                    .iter()
                    .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())),
            );
            let mut decoder = Decoder::new(4096);
            assert_eq!(decode_all(&mut decoder, &out), Ok(expected));
            // Nothing indexed: the peer's table stays empty.
            assert_eq!(decoder.table_size(), 0);
        }
        // Appends to what is already there.
        let mut out = vec![0xaa];
        encode_response(200, &HeaderMap::new(), &mut out);
        assert_eq!(out, [0xaa, 0x88]);
    }

    /// xorshift64*: a deterministic source for the fuzz loops.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    #[test]
    fn random_blocks_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decoder = Decoder::new(256);
        let mut block = Vec::new();
        let start = Instant::now();
        for round in 0..300_000 {
            // Bounded in time on a slow machine (a debug build).
            if start.elapsed() > Duration::from_secs(2) {
                break;
            }
            if round % 1000 == 0 {
                decoder = Decoder::new(256);
            }
            block.clear();
            for _ in 0..rng.below(24) {
                // Many all-ones and small values, to go deep into the
                // representations and reach the table.
                block.push(match rng.below(4) {
                    0 => 0xff,
                    1 => rng.below(0x10) as u8,
                    _ => rng.next() as u8,
                });
            }
            let limit = rng.below(300);
            let refuse = round % 3 == 0;
            let _ = decoder.decode(&block, limit, |_, _| if refuse { Err(()) } else { Ok(()) });
            assert!(decoder.table_size() <= 256);
        }
    }

    #[test]
    fn random_strings_round_trip() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut coded = Vec::new();
        let mut decoded = Vec::new();
        for _ in 0..20_000 {
            let len = rng.below(40);
            let s: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            coded.clear();
            encode_string(&s, &mut coded);
            let mut reader = Reader {
                rest: &coded,
                block_len: coded.len(),
            };
            assert_eq!(reader.string(&mut decoded), Ok(&s[..]));
        }
    }
}
