//! Comment themes: which topics of a taxonomy a comment mentions. Pure:
//! no clock, no I/O; the taxonomy is the user's (`[[themes]]`) or the one
//! shipped in the binary (`default.toml`).
//!
//! Comments and patterns are normalised the same way: Unicode lowercase,
//! compatibility decomposition (NFKD), combining marks removed (so
//! `Atención` reads `atencion`), then split into words, each a maximal run
//! of letters or digits. A pattern matches when its words occur one after
//! the other in the comment's words; a pattern word ending in `*` matches
//! every word that starts with it (`lent*`: `lento`, `lentitud`). A
//! comment mentions a theme when any of its patterns matches.
//!
//! Themes are numbered in name order, so a `ThemeSet` (a bit per theme)
//! lists its names sorted. Matching looks each comment word up once among
//! the patterns' first words, and once among the prefix patterns' first
//! words by its first two letters, so its cost grows with the comment, not
//! with the taxonomy.

use std::cell::RefCell;

use hashbrown::HashMap;
use serde::Deserialize;
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Most themes in a taxonomy: a `ThemeSet` is 64 bits.
pub const MAX_THEMES: usize = 64;
/// Most patterns per theme.
pub const MAX_PATTERNS: usize = 64;
/// Longest theme name (it is a label value).
pub const MAX_NAME: usize = 32;

/// One `[[themes]]` entry of the settings file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThemeSpec {
    /// Label-safe: 1 to 32 of `a-z`, `0-9`, `_`.
    pub name: String,
    /// 1 to 64 words or phrases.
    pub patterns: Vec<String>,
}

/// A set of themes of one taxonomy: bit i is theme i (in name order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ThemeSet(pub u64);

impl ThemeSet {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, theme: usize) -> bool {
        theme < MAX_THEMES && self.0 >> theme & 1 == 1
    }

    /// The theme numbers in the set, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut x = self.0;
        std::iter::from_fn(move || {
            if x == 0 {
                return None;
            }
            let i = x.trailing_zeros() as usize;
            x &= x - 1;
            Some(i)
        })
    }
}

/// Why a taxonomy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxonomyError {
    #[error("at most {MAX_THEMES} themes, got {0}")]
    TooMany(usize),
    #[error("theme name `{0}` must be 1 to {MAX_NAME} characters of a-z, 0-9 and _")]
    Name(String),
    #[error("theme `{0}` is listed twice")]
    Duplicate(String),
    #[error("theme `{name}` must have 1 to {MAX_PATTERNS} patterns, has {count}")]
    Patterns { name: String, count: usize },
    #[error("theme `{name}`: pattern `{pattern}` {why}")]
    Pattern {
        name: String,
        pattern: String,
        why: &'static str,
    },
}

/// A word's first two letters (`'\0'` for a missing second one).
fn head2(word: &str) -> (char, char) {
    let mut c = word.chars();
    (c.next().unwrap_or('\0'), c.next().unwrap_or('\0'))
}

/// A pattern word: the whole word, or (`*`) a prefix of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: Box<str>,
    prefix: bool,
}

impl Word {
    fn matches(&self, word: &str) -> bool {
        if self.prefix {
            word.starts_with(&*self.text)
        } else {
            word == &*self.text
        }
    }
}

/// A pattern, found by its first word: the theme it marks and the words
/// that must follow.
#[derive(Debug, Clone)]
struct Pattern {
    theme: u8,
    rest: Box<[Word]>,
}

/// A first word (whole, or a prefix ending in `*`) and the patterns it
/// starts.
#[derive(Debug, Clone)]
struct Start {
    word: Word,
    patterns: Vec<u16>,
}

/// Index of a word's first two letters (`head2`) when both are ASCII
/// letters or digits (the second may be missing): 37 × 37 places.
fn ascii_head(head: (char, char)) -> Option<usize> {
    fn place(c: char) -> Option<usize> {
        match c {
            'a'..='z' => Some(c as usize - 'a' as usize),
            '0'..='9' => Some(26 + c as usize - '0' as usize),
            '\0' => Some(36),
            _ => None,
        }
    }
    Some(place(head.0)? * 37 + place(head.1)?)
}

/// A validated taxonomy, ready to match.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    /// Theme names, sorted: theme i is `names[i]`.
    names: Vec<String>,
    patterns: Vec<Pattern>,
    /// First words grouped by their first two letters (`head2`; a
    /// one-letter prefix under (letter, `'\0'`)).
    starts: Vec<Vec<Start>>,
    /// The group of each ASCII head (`ascii_head`), plus one: 0 for none.
    ascii: Box<[u16]>,
    /// The group of each other head.
    other: HashMap<(char, char), u16>,
    /// Whether a one-letter prefix is among the first words.
    short_prefix: bool,
    /// Every theme's bit.
    all: u64,
}

/// The themes shipped in the binary (`src/themes/default.toml`).
pub fn default_specs() -> Vec<ThemeSpec> {
    #[derive(Deserialize)]
    struct File {
        themes: Vec<ThemeSpec>,
    }
    // The file is part of the source; a unit test parses and validates it.
    toml::from_str::<File>(include_str!("default.toml"))
        .map(|f| f.themes)
        .unwrap_or_default()
}

/// A name fit to be a label value and a word a CRM can route on: 1 to 32
/// of `a-z`, `0-9` and `_` (themes, promoter tiers and actions, root
/// causes).
pub fn label_safe(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Taxonomy {
    /// Checks `specs` (names, counts, every pattern has a word) and indexes
    /// the patterns.
    pub fn new(specs: &[ThemeSpec]) -> Result<Taxonomy, TaxonomyError> {
        if specs.len() > MAX_THEMES {
            return Err(TaxonomyError::TooMany(specs.len()));
        }
        let mut sorted: Vec<&ThemeSpec> = specs.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut t = Taxonomy {
            names: Vec::with_capacity(sorted.len()),
            patterns: Vec::new(),
            starts: Vec::new(),
            ascii: vec![0; 37 * 37].into_boxed_slice(),
            other: HashMap::new(),
            short_prefix: false,
            all: 0,
        };
        for (i, spec) in sorted.iter().enumerate() {
            if !label_safe(&spec.name) {
                return Err(TaxonomyError::Name(spec.name.clone()));
            }
            if t.names.last() == Some(&spec.name) {
                return Err(TaxonomyError::Duplicate(spec.name.clone()));
            }
            if !(1..=MAX_PATTERNS).contains(&spec.patterns.len()) {
                return Err(TaxonomyError::Patterns {
                    name: spec.name.clone(),
                    count: spec.patterns.len(),
                });
            }
            for p in &spec.patterns {
                let refuse = |why| TaxonomyError::Pattern {
                    name: spec.name.clone(),
                    pattern: p.clone(),
                    why,
                };
                let words = pattern_words(p).map_err(refuse)?;
                let Some((first, rest)) = words.split_first() else {
                    return Err(refuse("has no letters or digits"));
                };
                let id = t.patterns.len() as u16;
                t.short_prefix |= first.prefix && first.text.chars().nth(1).is_none();
                let group = t.group_or_new(head2(&first.text));
                match group.iter_mut().find(|s| s.word == *first) {
                    Some(s) => s.patterns.push(id),
                    None => group.push(Start {
                        word: first.clone(),
                        patterns: vec![id],
                    }),
                }
                t.patterns.push(Pattern {
                    theme: i as u8,
                    rest: rest.into(),
                });
            }
            t.names.push(spec.name.clone());
            t.all |= 1 << i;
        }
        Ok(t)
    }

    /// Theme names, sorted: theme i is `names()[i]`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The names of the themes in `set`, sorted.
    pub fn names_of(&self, set: ThemeSet) -> Vec<String> {
        set.iter()
            .filter_map(|i| self.names.get(i).cloned())
            .collect()
    }

    /// The themes `comment` mentions.
    pub fn classify(&self, comment: &str) -> ThemeSet {
        if comment.is_empty() || self.patterns.is_empty() {
            return ThemeSet(0);
        }
        thread_local! {
            static WORDS: RefCell<Words> = RefCell::new(Words::default());
        }
        WORDS.with_borrow_mut(|w| {
            w.read(comment);
            ThemeSet(self.find(w))
        })
    }

    /// The group of first words with `head`, made if new.
    fn group_or_new(&mut self, head: (char, char)) -> &mut Vec<Start> {
        let at = match ascii_head(head) {
            Some(i) => &mut self.ascii[i],
            None => self.other.entry(head).or_insert(0),
        };
        if *at == 0 {
            self.starts.push(Vec::new());
            *at = self.starts.len() as u16;
        }
        &mut self.starts[usize::from(*at) - 1]
    }

    /// The first words with `head`.
    fn group(&self, head: (char, char)) -> &[Start] {
        let at = match ascii_head(head) {
            Some(i) => self.ascii[i],
            None => self.other.get(&head).copied().unwrap_or(0),
        };
        match at {
            0 => &[],
            g => &self.starts[usize::from(g) - 1],
        }
    }

    fn find(&self, w: &Words) -> u64 {
        let mut found = 0;
        for i in 0..w.len() {
            let word = w.word(i);
            let (a, b) = head2(word);
            // A one-letter prefix is filed under (letter, '\0').
            let short = (self.short_prefix && b != '\0').then_some((a, '\0'));
            for head in std::iter::once((a, b)).chain(short) {
                for s in self.group(head) {
                    if s.word.matches(word) {
                        self.try_patterns(&s.patterns, w, i, &mut found);
                    }
                }
            }
            if found == self.all {
                break;
            }
        }
        found
    }

    /// Marks the themes of the patterns `ids` whose words follow word `i`.
    fn try_patterns(&self, ids: &[u16], w: &Words, i: usize, found: &mut u64) {
        for &id in ids {
            let p = &self.patterns[usize::from(id)];
            if *found >> p.theme & 1 == 1 || i + p.rest.len() >= w.len() {
                continue;
            }
            let follows = p
                .rest
                .iter()
                .enumerate()
                .all(|(k, pw)| pw.matches(w.word(i + 1 + k)));
            if follows {
                *found |= 1 << p.theme;
            }
        }
    }
}

/// A text's normalised words: the letters and digits, folded, with where
/// each word ends.
#[derive(Debug, Default)]
pub struct Words {
    text: String,
    /// Byte ranges of the words in `text`.
    spans: Vec<(u32, u32)>,
    /// Where the word being read starts.
    open: Option<usize>,
}

impl Words {
    /// Reads `text`'s words (replacing what was read before).
    pub fn read(&mut self, text: &str) {
        self.text.clear();
        self.spans.clear();
        self.open = None;
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_alphanumeric() {
                // A run of ASCII letters and digits, copied and lowercased
                // at once: what `fold` does to each.
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let at = self.text.len();
                self.open.get_or_insert(at);
                self.text.push_str(&text[start..i]);
                self.text.as_mut_str()[at..].make_ascii_lowercase();
            } else if bytes[i].is_ascii() {
                self.put(None);
                i += 1;
            } else {
                // `i` is a character boundary: what came before was ASCII
                // or whole characters.
                let Some(c) = text[i..].chars().next() else {
                    break;
                };
                match latin(c) {
                    Some(folded) => {
                        for d in folded.iter() {
                            self.put(d);
                        }
                    }
                    None => fold(c, |d| self.put(d)),
                }
                i += c.len_utf8();
            }
        }
        self.put(None);
    }

    /// A letter or digit (`Some`) or a boundary (`None`).
    fn put(&mut self, c: Option<char>) {
        match c {
            Some(c) => {
                self.open.get_or_insert(self.text.len());
                self.text.push(c);
            }
            None => {
                if let Some(start) = self.open.take() {
                    self.spans.push((start as u32, self.text.len() as u32));
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Word `i` (`i < len()`).
    pub fn word(&self, i: usize) -> &str {
        let (a, b) = self.spans[i];
        &self.text[a as usize..b as usize]
    }

    /// Every word, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.word(i))
    }
}

/// `c` lowercased, decomposed (NFKD) and without combining marks, as
/// letters or digits (`Some`) and boundaries (`None`).
#[inline]
fn fold(c: char, mut put: impl FnMut(Option<char>)) {
    if c.is_ascii() {
        put(c.is_ascii_alphanumeric().then(|| c.to_ascii_lowercase()));
        return;
    }
    for lower in c.to_lowercase() {
        decompose_compatible(lower, |d| {
            if !is_combining_mark(d) {
                put(d.is_alphanumeric().then_some(d));
            }
        });
    }
}

/// What `fold` makes of a character: up to three letters, digits or
/// boundaries (`'\0'` for a boundary).
#[derive(Clone, Copy, Default)]
struct Folded {
    out: [char; 3],
    len: u8,
}

impl Folded {
    fn iter(self) -> impl Iterator<Item = Option<char>> {
        self.out
            .into_iter()
            .take(usize::from(self.len))
            .map(|c| (c != '\0').then_some(c))
    }
}

/// The first characters past ASCII (Latin-1 and Latin Extended-A, where
/// Spanish, Portuguese and French accents are).
const LATIN: std::ops::Range<u32> = 0x80..0x180;

/// `fold` of a character in `LATIN`, from a table `fold` itself fills
/// once (`None`: outside the table, or folding into more than three).
fn latin(c: char) -> Option<Folded> {
    static TABLE: std::sync::OnceLock<Vec<Option<Folded>>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        LATIN
            .map(|u| {
                let c = char::from_u32(u)?;
                let mut f = Folded::default();
                let mut fits = true;
                fold(c, |d| match f.out.get_mut(usize::from(f.len)) {
                    Some(slot) => {
                        *slot = d.unwrap_or('\0');
                        f.len += 1;
                    }
                    None => fits = false,
                });
                fits.then_some(f)
            })
            .collect()
    });
    let i = u32::from(c).checked_sub(LATIN.start)?;
    table.get(i as usize).copied().flatten()
}

/// A pattern's words, normalised as comments are; a word followed by `*`
/// is a prefix.
fn pattern_words(pattern: &str) -> Result<Vec<Word>, &'static str> {
    let mut words = Vec::new();
    let mut open = String::new();
    let mut star_after = false;
    let close = |open: &mut String, prefix: bool, words: &mut Vec<Word>| {
        if !open.is_empty() {
            words.push(Word {
                text: std::mem::take(open).into(),
                prefix,
            });
        }
    };
    for c in pattern.chars() {
        if c == '*' {
            if open.is_empty() {
                return Err("has a `*` that does not end a word");
            }
            close(&mut open, true, &mut words);
            star_after = true;
            continue;
        }
        let mut bad = false;
        fold(c, |d| match d {
            Some(d) => {
                bad |= star_after;
                open.push(d);
            }
            None => {
                star_after = false;
                close(&mut open, false, &mut words);
            }
        });
        if bad {
            return Err("has a `*` inside a word");
        }
    }
    close(&mut open, false, &mut words);
    Ok(words)
}

#[cfg(test)]
mod tests;
