//! The module graph as the source states it (`crate::…` paths): no import circle between the
//! top-level modules, and the lower layers never reach up. Data flows one way; a change that
//! breaks it fails here, not in a later reader's head.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Rust files under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules its non-test code names (`crate::x`, or `x` in a
/// `use crate::{…}` group).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut mods: BTreeSet<String> = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().trim_end_matches(".rs").to_string();
        if name != "main" && name != "lib" {
            mods.insert(name);
        }
    }
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &mods {
        let mut fs = Vec::new();
        let dir = src.join(m);
        if dir.is_dir() {
            files(&dir, &mut fs);
        } else {
            fs.push(src.join(format!("{m}.rs")));
        }
        let deps = g.entry(m.clone()).or_default();
        for f in fs.iter().filter(|f| !f.ends_with("tests.rs")) {
            let text = std::fs::read_to_string(f).unwrap();
            // Unit tests may reach anywhere; they sit at the end of a file.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    // `use crate::{a::…, b, c::{…}}`: the names at the group's top level.
                    let mut depth = 0;
                    let mut word = String::new();
                    let mut at_start = true;
                    for c in group.chars() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => break,
                            '}' => depth -= 1,
                            ',' if depth == 0 => at_start = true,
                            c if c.is_alphanumeric() || c == '_' => {
                                if at_start && depth == 0 {
                                    word.push(c);
                                }
                            }
                            _ => {
                                if !word.is_empty() {
                                    deps.insert(std::mem::take(&mut word));
                                }
                                if !c.is_whitespace() {
                                    at_start = false;
                                }
                            }
                        }
                    }
                    if !word.is_empty() {
                        deps.insert(word);
                    }
                } else {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    deps.insert(name);
                }
            }
        }
        deps.retain(|d| d != m && mods.contains(d));
    }
    g
}

/// A cycle through `start`, if any (depth-first, bounded by the module count).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(g: &BTreeMap<String, BTreeSet<String>>, at: &str, start: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for d in g.get(at).into_iter().flatten() {
            if d == start {
                path.push(d.clone());
                return true;
            }
            if seen.insert(d.clone()) {
                path.push(d.clone());
                if walk(g, d, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(g, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_circle_between_modules() {
    let g = graph();
    assert!(g.len() > 10, "modules found: {:?}", g.keys());
    assert!(g["session"].contains("enrich") && g["watch"].contains("session"), "the reader sees imports: {g:?}");
    for m in g.keys() {
        assert!(cycle(&g, m).is_none(), "import circle: {}", cycle(&g, m).unwrap().join(" → "));
    }
}

#[test]
fn lower_layers_do_not_reach_up() {
    let g = graph();
    for (low, high) in [("model", "probes"), ("model", "enrich"), ("model", "sinks"), ("kernel", "probes"), ("enrich", "probes"), ("enrich", "sinks"), ("sinks", "enrich"), ("args", "session")] {
        assert!(!g[low].contains(high), "{low} imports {high}");
    }
    for m in g.keys() {
        assert!(!g[m].contains("cli"), "{m} imports cli: options belong in args/");
    }
}

#[test]
fn the_check_catches_a_circle() {
    let mut g = graph();
    g.get_mut("model").unwrap().insert("session".into());
    assert!(cycle(&g, "model").is_some());
}
