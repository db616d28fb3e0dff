//! Configuration errors that name the file, the line and the column.
//!
//! Every problem found while loading becomes one [`ConfigError`]; loading
//! goes on after a problem, so one run reports them all ([`ConfigErrors`]).
//! Syntax errors come from `toml` as byte spans and semantic errors from the
//! `serde_spanned::Spanned` fields of the file structs; both are turned into
//! 1-based line and column (in characters) here, so every message reads
//! `FILE:LINE:COLUMN: what is wrong`.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A line and column in a file, both 1-based; the column counts characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

/// A place in the configuration: a file and, where known, a position in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file, as given (the configuration) or as resolved (files it names).
    pub file: PathBuf,
    /// Where in the file; `None` for a problem with the file as a whole.
    pub position: Option<Position>,
}

/// `FILE:LINE:COLUMN`, or `FILE` alone.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{}:{}:{}", self.file.display(), p.line, p.column),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// What is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file could not be read (the configuration, a devices file).
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// TOML syntax, an unknown field, a missing field or a wrong type.
    #[error("{0}")]
    Syntax(String),
    /// Not a socket address.
    #[error(
        "invalid socket address {value:?}: expected IP:PORT, e.g. \"[::]:443\" or \"0.0.0.0:443\""
    )]
    Address {
        /// As written.
        value: String,
    },
    /// Not a duration.
    #[error("invalid duration {value:?}: {reason}")]
    Duration {
        /// As written.
        value: String,
        /// Why.
        reason: String,
    },
    /// Not a size.
    #[error("invalid size {value:?}: {reason}")]
    Size {
        /// As written.
        value: String,
        /// Why.
        reason: String,
    },
    /// A number outside what the option allows.
    #[error("{field} = {value} is out of range {range}")]
    Range {
        /// The option.
        field: &'static str,
        /// As written (sizes and durations shown in their unit).
        value: String,
        /// The allowed range.
        range: String,
    },
    /// A value of the right type that is not acceptable (a host name, a
    /// path, a token); `what` names the option.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// The option.
        what: &'static str,
        /// As written.
        value: String,
        /// Why.
        reason: String,
    },
    /// Not a device id (a DNS label).
    #[error(
        "invalid device id {0:?}: a device id is a DNS label: 1 to 63 of a-z, 0-9 and '-', \
         not starting or ending with '-'"
    )]
    DeviceId(String),
    /// A device id defined twice.
    #[error("duplicate device id {id:?} (first defined at {first})")]
    DuplicateDevice {
        /// The id.
        id: String,
        /// Where it was first defined.
        first: Location,
    },
    /// A public key used twice.
    #[error("public key {key} of device {id:?} is already used by {owner} ({first})")]
    DuplicateKey {
        /// The key in hex.
        key: String,
        /// The device that repeats it.
        id: String,
        /// Who has it already: `device "x"` or `the gateway's own key`.
        owner: String,
        /// Where that is defined.
        first: Location,
    },
    /// A key that is not 64 hex digits.
    #[error("invalid {what}: {reason}")]
    Key {
        /// Which key.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The gateway's key file is missing or malformed.
    #[error("key file {}: {reason}", path.display())]
    KeyFile {
        /// The resolved path.
        path: PathBuf,
        /// Why (and how to make one).
        reason: String,
    },
    /// A certificate or its key could not be loaded.
    #[error("certificate {0}")]
    Certificate(String),
    /// A TLS listener without certificates.
    #[error(
        "listener {address} has tls = true but [tls] certificates is empty \
         (add certificates, or set tls = false on the listener)"
    )]
    MissingCertificates {
        /// The listener.
        address: SocketAddr,
    },
    /// Two listeners that cannot both bind.
    #[error("{what} conflicts with {other} ({first})")]
    AddressConflict {
        /// This listener.
        what: String,
        /// Its address.
        address: SocketAddr,
        /// The one it conflicts with.
        other: String,
        /// Where that one is defined.
        first: Location,
    },
    /// No `[[listen]]` section.
    #[error(
        "no [[listen]] section: add at least one browser-facing listener, e.g. [[listen]] address = \"[::]:443\""
    )]
    NoListener,
    /// A device on the link without a key.
    #[error("device {0:?} uses upstream \"link\" and needs a public_key")]
    MissingKey(String),
    /// Options that contradict each other.
    #[error("{0}")]
    Conflict(String),
}

/// One problem, where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {kind}")]
pub struct ConfigError {
    /// Where.
    pub at: Location,
    /// What.
    pub kind: ErrorKind,
}

/// Every problem found in one load, in file order; displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never, for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A file's text, able to turn byte offsets into positions.
#[derive(Debug)]
pub(crate) struct Source {
    path: PathBuf,
    text: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub(crate) fn new(path: &Path, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            path: path.to_path_buf(),
            text,
            line_starts,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The position of byte `offset` (clamped to the text).
    pub(crate) fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        Position { line, column }
    }

    /// The location of a span (its start), or of the whole file.
    pub(crate) fn locate(&self, span: Option<Range<usize>>) -> Location {
        Location {
            file: self.path.clone(),
            position: span.map(|s| self.position(s.start)),
        }
    }

    pub(crate) fn error(&self, span: Option<Range<usize>>, kind: ErrorKind) -> ConfigError {
        ConfigError {
            at: self.locate(span),
            kind,
        }
    }

    /// A `toml` error (syntax, unknown field, type) at its span.
    pub(crate) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        self.error(
            e.span(),
            ErrorKind::Syntax(e.message().trim_end().to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let s = Source::new(Path::new("f.toml"), "ab\nçd = 1\n\nx".to_string());
        assert_eq!(s.position(0), Position { line: 1, column: 1 });
        assert_eq!(s.position(2), Position { line: 1, column: 3 });
        assert_eq!(s.position(3), Position { line: 2, column: 1 });
        // 'ç' is two bytes, one column.
        assert_eq!(s.position(5), Position { line: 2, column: 2 });
        // Inside a character: its start.
        assert_eq!(s.position(4), Position { line: 2, column: 1 });
        assert_eq!(s.position(11), Position { line: 3, column: 1 });
        assert_eq!(s.position(12), Position { line: 4, column: 1 });
        assert_eq!(s.position(999), Position { line: 4, column: 2 });
        let e = s.error(Some(5..6), ErrorKind::Conflict("x".into()));
        assert_eq!(e.to_string(), "f.toml:2:2: x");
    }
}
