//! Which language a component was written in, from its `producers` custom
//! sections (the tool-conventions' metadata every toolchain here writes),
//! for the module record and the dashboard's Modules view.
//!
//! The toolchains say it differently:
//! - componentize-js names `JavaScript` in the component's own section;
//! - componentize-py names no language (its core modules are CPython's, in
//!   C and Rust), so its components are known by the `componentize-py`
//!   names they carry;
//! - cargo-built components carry `wit-bindgen-rust` in the core module's
//!   section, whose languages (`Rust`, and `C11` from wasi-libc) say Rust.
//!
//! The walk reads section headers only (it never decodes code), so it costs
//! little even on a 20 MB component; malformed bytes give `None` (upload
//! validation reports those).

/// The language of a component or module, when its bytes say it.
pub fn language_of(bytes: &[u8]) -> Option<String> {
    let mut found = Producers::default();
    walk(bytes, 0, &mut found);
    if found.languages_top.iter().any(|l| l == "JavaScript") {
        return Some("JavaScript".into());
    }
    if contains(bytes, b"componentize-py") {
        return Some("Python".into());
    }
    if found.tools.iter().any(|t| t == "wit-bindgen-rust") {
        return Some("Rust".into());
    }
    found
        .languages_top
        .into_iter()
        .chain(found.languages_inner)
        .find(|l| !l.starts_with("C11") && !l.starts_with("C99"))
        .or(found.c.then(|| "C".into()))
}

#[derive(Default)]
struct Producers {
    /// Languages named by the outermost component or module.
    languages_top: Vec<String>,
    /// Languages named by nested core modules and components.
    languages_inner: Vec<String>,
    /// Tools named in any `processed-by`.
    tools: Vec<String>,
    /// Whether C was named anywhere.
    c: bool,
}

/// Read the sections of a module or component starting at `start` (just
/// after its 8-byte preamble), descending into nested ones.
fn walk(bytes: &[u8], depth: usize, found: &mut Producers) {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" || depth > 4 {
        return;
    }
    let mut at = 8;
    while at < bytes.len() {
        let id = bytes[at];
        let Some((size, body)) = leb(bytes, at + 1) else {
            return;
        };
        let Some(section) = bytes.get(body..body.saturating_add(size as usize)) else {
            return;
        };
        match id {
            0 => custom(section, depth, found),
            // A component's nested core modules (1) and components (4).
            1 | 4 if section.starts_with(b"\0asm") => walk(section, depth + 1, found),
            _ => {}
        }
        at = body + section.len();
    }
}

fn custom(section: &[u8], depth: usize, found: &mut Producers) {
    let Some((name, mut at)) = string(section, 0) else {
        return;
    };
    if name != "producers" {
        return;
    }
    let Some((fields, next)) = leb(section, at) else {
        return;
    };
    at = next;
    for _ in 0..fields {
        let Some((field, next)) = string(section, at) else {
            return;
        };
        let Some((values, next)) = leb(section, next) else {
            return;
        };
        at = next;
        for _ in 0..values {
            let Some((name, next)) = string(section, at) else {
                return;
            };
            let Some((_version, next)) = string(section, next) else {
                return;
            };
            at = next;
            match field.as_str() {
                "language" => {
                    found.c |= name.starts_with("C11") || name.starts_with("C99");
                    if depth == 0 {
                        found.languages_top.push(name);
                    } else {
                        found.languages_inner.push(name);
                    }
                }
                "processed-by" => found.tools.push(name),
                _ => {}
            }
        }
    }
}

/// An unsigned LEB128 at `at`: the value and where the next byte is.
pub(super) fn leb(bytes: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(at)?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some((value, at));
        }
    }
    None
}

/// A length-prefixed UTF-8 string at `at`, and where the next byte is.
pub(super) fn string(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    let (length, start) = leb(bytes, at)?;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    let text = std::str::from_utf8(bytes.get(start..end)?).ok()?;
    Some((text.to_string(), end))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module whose one section is a `producers` section naming these.
    fn module_with(fields: &[(&str, &[&str])]) -> Vec<u8> {
        fn push_string(out: &mut Vec<u8>, text: &str) {
            out.push(text.len() as u8);
            out.extend_from_slice(text.as_bytes());
        }
        let mut section = Vec::new();
        push_string(&mut section, "producers");
        section.push(fields.len() as u8);
        for (field, names) in fields {
            push_string(&mut section, field);
            section.push(names.len() as u8);
            for name in *names {
                push_string(&mut section, name);
                push_string(&mut section, "1.0");
            }
        }
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.push(0);
        module.push(section.len() as u8);
        module.extend(section);
        module
    }

    #[test]
    fn each_toolchain_is_recognised() {
        let js = module_with(&[
            ("language", &["JavaScript"]),
            ("processed-by", &["ComponentizeJS"]),
        ]);
        assert_eq!(language_of(&js).as_deref(), Some("JavaScript"));
        let rust = module_with(&[
            ("language", &["Rust", "C11"]),
            ("processed-by", &["rustc", "wit-bindgen-rust"]),
        ]);
        assert_eq!(language_of(&rust).as_deref(), Some("Rust"));
        let mut python = module_with(&[("processed-by", &["wit-component"])]);
        python.extend_from_slice(b"componentize-py#CallIndirect");
        assert_eq!(language_of(&python).as_deref(), Some("Python"));
        let c = module_with(&[("language", &["C11"])]);
        assert_eq!(language_of(&c).as_deref(), Some("C"));
        assert_eq!(language_of(&module_with(&[])), None);
        assert_eq!(language_of(b"not wasm"), None);
    }
}
