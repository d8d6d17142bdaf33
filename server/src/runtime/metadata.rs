//! A module's own description of itself: the `stepwise:metadata` custom
//! section (JSON: title, description, version, settings schema) that the
//! guest SDK's `metadata!` macro writes. The runtime only finds the bytes;
//! what they must say is checked by the API, which owns the JSON Schema
//! validator.
//!
//! `cargo build` puts the section in the core module that the component
//! wraps, and other tools may put it on the component itself, so the walk
//! descends into nested core modules and components, like the language walk
//! (it reads section headers only, never code).

use super::language::{leb, string};

/// The custom section's name.
pub const METADATA_SECTION: &str = "stepwise:metadata";

/// The payload of the first `stepwise:metadata` section of a component or
/// module, outermost first; `None` when it has none (or is not WebAssembly).
pub fn metadata_section(bytes: &[u8]) -> Option<Vec<u8>> {
    find(bytes, 0)
}

fn find(bytes: &[u8], depth: usize) -> Option<Vec<u8>> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" || depth > 4 {
        return None;
    }
    let mut nested = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        let id = bytes[at];
        let (size, body) = leb(bytes, at + 1)?;
        let section = bytes.get(body..body.checked_add(usize::try_from(size).ok()?)?)?;
        match id {
            0 => {
                if let Some((name, payload)) = string(section, 0)
                    && name == METADATA_SECTION
                {
                    return Some(section[payload..].to_vec());
                }
            }
            1 | 4 if section.starts_with(b"\0asm") => nested.push(section),
            _ => {}
        }
        at = body + section.len();
    }
    nested.into_iter().find_map(|inner| find(inner, depth + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(payload);
        let mut section = vec![0, body.len() as u8];
        section.extend(body);
        section
    }

    #[test]
    fn found_on_the_component_or_in_a_nested_core_module() {
        let mut core = b"\0asm\x01\0\0\0".to_vec();
        core.extend(custom("other", b"x"));
        core.extend(custom(METADATA_SECTION, b"{\"title\":\"inner\"}"));
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        component.push(1);
        component.push(core.len() as u8);
        component.extend(&core);
        assert_eq!(
            metadata_section(&component).as_deref(),
            Some(&b"{\"title\":\"inner\"}"[..])
        );
        // The component's own section wins over a nested one.
        component.extend(custom(METADATA_SECTION, b"{}"));
        assert_eq!(metadata_section(&component).as_deref(), Some(&b"{}"[..]));
        assert_eq!(metadata_section(b"\0asm\x0d\0\x01\0"), None);
        assert_eq!(metadata_section(b"not wasm"), None);
    }
}
