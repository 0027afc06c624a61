//! The layering of DESIGN.md's "Layout", read from the source: nothing outside the HTTP edge
//! reaches into it, and the events crate's modules form no circle.
//!
//! The scan is textual, not a compiler. Comments, string and char literals are blanked first;
//! then every path rooted at the crate (`crate::`, `$crate::`, or as many `super::` as reach
//! the root) is expanded, `use` groups included, wherever it appears. Test modules count: a
//! test that reaches up a layer still ties the two modules together.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_module_outside_http_reaches_into_the_http_edge() {
    let src = manifest_dir().join("src");
    assert!(
        src.join("store").is_dir(),
        "{} is missing: the scan would pass on nothing",
        src.join("store").display()
    );
    let mut files = Vec::new();
    for dir in ["app", "store", "cli"] {
        if src.join(dir).is_dir() {
            files.extend(rust_files(&src.join(dir)));
        }
    }
    for file in ["app.rs", "cli.rs"] {
        if src.join(file).is_file() {
            files.push(src.join(file));
        }
    }

    let mut found = Vec::new();
    for file in &files {
        let source = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let relative = file.strip_prefix(&src).expect("under src");
        let mut by_line: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (line, path) in http_references(&source, module_depth(relative)) {
            by_line
                .entry(line)
                .or_default()
                .push(format!("crate::{path}"));
        }
        for (line, paths) in by_line {
            found.push(format!(
                "src/{}:{line}: {}",
                relative.display(),
                paths.join(", ")
            ));
        }
    }

    assert!(
        found.is_empty(),
        "the application, store and CLI must not depend on the HTTP edge (src/http); move what \
         they need below it:\n{}",
        found.join("\n")
    );
}

#[test]
fn events_modules_form_no_cycle() {
    let dir = manifest_dir().join("events/src");
    let lib = fs::read_to_string(dir.join("lib.rs")).expect("events/src/lib.rs");
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(&dir).expect("events/src") {
        let path = entry.expect("a directory entry").path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            let source = fs::read_to_string(&path).expect("readable");
            modules.insert(name.to_owned(), source);
        }
    }

    let graph = module_graph(&lib, &modules);
    assert!(
        graph.values().any(|edges| !edges.is_empty()),
        "no module of events/src names another: the scan is broken, not the crate layered"
    );

    let report: Vec<String> = cycles(&graph)
        .iter()
        .map(|circle| {
            let walk: Vec<String> = circle
                .walk
                .windows(2)
                .map(|w| {
                    format!(
                        "{} -> {} (events/src/{}.rs:{})",
                        w[0], w[1], w[0], graph[&w[0]][&w[1]]
                    )
                })
                .collect();
            format!(
                "{} reach each other, e.g. {}",
                circle.modules.join(", "),
                walk.join(", ")
            )
        })
        .collect();
    assert!(
        report.is_empty(),
        "events/src modules must form one-way layers (see the Layout in events/src/lib.rs); \
         these reach back:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_known_cycles_and_passes_a_layered_graph() {
    let lib = "pub mod a;\npub mod b;\npub mod c;\npub use a::Thing;\n";
    let found = |modules: &[(&str, &str)]| {
        let modules = modules
            .iter()
            .map(|(name, source)| (name.to_string(), source.to_string()))
            .collect();
        cycles(&module_graph(lib, &modules))
            .into_iter()
            .map(|circle| circle.walk)
            .collect::<Vec<_>>()
    };
    let cycle = |names: &[&str]| vec![names.iter().map(|n| n.to_string()).collect::<Vec<_>>()];

    // A multi-line group, an inline call, and a lifetime and a quote char on the way.
    let circle = [
        ("a", "use crate::b::X;\n"),
        ("b", "use crate::{\n    c::{self, Y},\n};\n"),
        (
            "c",
            "fn f<'a>(_: &'a str) -> char { '\"' }\nfn g() -> u8 { crate::a::g() }\n",
        ),
    ];
    assert_eq!(found(&circle), cycle(&["a", "b", "c", "a"]));

    // Reaching back from a test module, through a root re-export or with `super::super`.
    let through_tests = [
        ("a", "use crate::b::X;\n"),
        (
            "b",
            "pub struct X;\n#[cfg(test)]\nmod tests {\n    use crate::Thing;\n}\n",
        ),
    ];
    assert_eq!(found(&through_tests), cycle(&["a", "b", "a"]));
    let through_super = [
        ("a", "use crate::b::X;\n"),
        ("b", "mod tests {\n    use super::super::a::Thing;\n}\n"),
    ];
    assert_eq!(found(&through_super), cycle(&["a", "b", "a"]));

    // Mentions in comments and literals are not references, nor is a `super::` that stays
    // inside its module.
    let layered = [
        (
            "a",
            "//! Named in [`crate::b`] docs only.\n/* crate::b::X /* nested */ crate::c */\n\
             pub const S: &str = \"crate::b::X\";\npub const R: &str = r#\"a \"crate::c\" b\"#;\n",
        ),
        (
            "b",
            "use crate::a::S;\n// use crate::c::Z;\nmod c {\n    pub struct Z;\n}\n\
             mod tests {\n    use super::c::Z;\n}\n",
        ),
        ("c", "use crate::{a, b::{self}};\n"),
    ];
    assert_eq!(found(&layered), Vec::<Vec<String>>::new());
}

#[test]
fn the_http_scanner_finds_every_spelling_and_nothing_else() {
    let lines = |source: &str, depth| -> Vec<usize> {
        http_references(source, depth)
            .into_iter()
            .map(|(line, _)| line)
            .collect()
    };

    let spelled = "use crate::http;\nuse crate::{\n    app,\n    http::ApiError,\n};\n\
                   fn f() { crate::http::error::respond() }\nuse super::http::state;\n\
                   macro_rules! m { () => { $crate::http::x() } }\n";
    assert_eq!(lines(spelled, 1), [1, 4, 6, 7, 8]);
    assert_eq!(lines("use super::super::http::AppState;\n", 2), [1]);

    let elsewhere = "// use crate::http;\n/// [`crate::http`]\n\
                     const S: &str = \"crate::http::x\";\nuse crate::https;\n\
                     use axum::http::StatusCode;\nuse crate::app::http::Thing;\n\
                     pub(crate) fn f() {}\nmod tests {\n    use super::http;\n}\n";
    assert_eq!(lines(elsewhere, 1), Vec::<usize>::new());
    assert_eq!(lines("use super::http;\n", 2), Vec::<usize>::new());
}

/// Every `.rs` file under `dir`, sorted so failures list in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// How many `super::` reach the crate root from a file at `relative` (to `src/`).
fn module_depth(relative: &Path) -> usize {
    let parts = relative.components().count();
    if relative.file_name().is_some_and(|n| n == "mod.rs") {
        parts - 1
    } else {
        parts
    }
}

/// Lines naming `crate::http`, with the path named below the root.
fn http_references(source: &str, depth: usize) -> Vec<(usize, String)> {
    crate_paths(&tokens(&code_only(source)), depth)
        .into_iter()
        .filter(|(path, _)| path[0] == "http")
        .map(|(path, line)| (line, path.join("::")))
        .collect()
}

/// Module -> module it names -> the first line naming it. Self-references are left out.
type Graph = BTreeMap<String, BTreeMap<String, usize>>;

/// The graph of `modules` (name -> source), with `crate::Name` resolved through what `lib`
/// re-exports at the root.
fn module_graph(lib: &str, modules: &BTreeMap<String, String>) -> Graph {
    let lib_tokens = tokens(&code_only(lib));
    let mut reexports = BTreeMap::new();
    for (i, token) in lib_tokens.iter().enumerate() {
        if token.text == "use" {
            let mut leaves = Vec::new();
            use_tree(&lib_tokens, i + 1, &[], None, &mut leaves);
            for (path, _) in leaves {
                if path.len() > 1 && modules.contains_key(&path[0]) {
                    reexports.insert(path[path.len() - 1].clone(), path[0].clone());
                }
            }
        }
    }

    let mut graph = Graph::new();
    for (name, source) in modules {
        let edges = graph.entry(name.clone()).or_default();
        for (path, line) in crate_paths(&tokens(&code_only(source)), 1) {
            let target = if modules.contains_key(&path[0]) {
                &path[0]
            } else if let Some(module) = reexports.get(&path[0]) {
                module
            } else {
                continue;
            };
            if target != name {
                edges.entry(target.clone()).or_insert(line);
            }
        }
    }
    graph
}

/// Modules that all reach each other, and the shortest walk from the first of them back to
/// itself (first module repeated at the end).
struct Circle {
    modules: Vec<String>,
    walk: Vec<String>,
}

/// One [`Circle`] per group of modules that reach each other.
fn cycles(graph: &Graph) -> Vec<Circle> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = graph.get(from).into_iter().flat_map(|e| e.keys()).collect();
        while let Some(node) = todo.pop() {
            if seen.insert(node.clone()) {
                todo.extend(graph.get(node).into_iter().flat_map(|e| e.keys()));
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|node| (node, reach(node))).collect();

    let mut reported = BTreeSet::new();
    let mut found = Vec::new();
    for start in graph.keys() {
        if reported.contains(start) || !reachable[start].contains(start) {
            continue;
        }
        let group: BTreeSet<&String> = graph
            .keys()
            .filter(|n| reachable[start].contains(*n) && reachable[*n].contains(start))
            .collect();
        reported.extend(group.iter().map(|n| (*n).clone()));

        // Breadth first inside the group, so the walk shown is a shortest one.
        let mut parent: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        'search: while let Some(node) = queue.pop_front() {
            for next in graph[node].keys().filter(|n| group.contains(n)) {
                if next == start {
                    let mut back = Vec::new();
                    let mut at = node;
                    while at != start {
                        back.push(at.clone());
                        at = parent[at];
                    }
                    let mut walk = vec![start.clone()];
                    walk.extend(back.into_iter().rev());
                    walk.push(start.clone());
                    found.push(Circle {
                        modules: group.iter().map(|n| (*n).clone()).collect(),
                        walk,
                    });
                    break 'search;
                }
                if !parent.contains_key(next) && next != start {
                    parent.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
    }
    found
}

/// `source` with comments and the insides of string and char literals blanked, line breaks
/// kept so line numbers still hold.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut out = String::with_capacity(source.len());
    let blank_to = |out: &mut String, from: usize, to: usize| {
        for &c in &chars[from..to.min(chars.len())] {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // The end (exclusive) of a comment or literal starting at `i`, if one does.
        let end = if c == '/' && at(i + 1) == '/' {
            Some(
                (i..chars.len())
                    .find(|&j| chars[j] == '\n')
                    .unwrap_or(chars.len()),
            )
        } else if c == '/' && at(i + 1) == '*' {
            let (mut j, mut depth) = (i, 0);
            while j < chars.len() {
                if at(j) == '/' && at(j + 1) == '*' {
                    depth += 1;
                    j += 2;
                } else if at(j) == '*' && at(j + 1) == '/' {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            Some(j)
        } else if c == 'r'
            && (i == 0
                || !is_ident(at(i - 1))
                || (at(i - 1) == 'b' && (i < 2 || !is_ident(at(i - 2)))))
            && matches!(at(i + 1), '"' | '#')
        {
            let hashes = (i + 1..chars.len())
                .take_while(|&j| chars[j] == '#')
                .count();
            if at(i + 1 + hashes) == '"' {
                let body = i + 2 + hashes;
                let close = (body..chars.len())
                    .find(|&j| chars[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#'));
                Some(close.map_or(chars.len(), |j| j + 1 + hashes))
            } else {
                None
            }
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            Some(j + 1)
        } else if c == '\'' && at(i + 1) == '\\' {
            Some(
                (i + 3..chars.len())
                    .find(|&j| chars[j] == '\'')
                    .map_or(chars.len(), |j| j + 1),
            )
        } else if c == '\'' && at(i + 2) == '\'' {
            Some(i + 3)
        } else {
            None
        };
        match end {
            Some(end) => {
                blank_to(&mut out, i, end);
                i = end;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

struct Token {
    text: String,
    line: usize,
}

/// Identifiers (and numbers), `::`, and single punctuation characters, with their lines.
fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token {
                text: chars[start..i].iter().collect(),
                line,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token {
                text: "::".to_owned(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

fn is_name(token: Option<&Token>) -> bool {
    token.is_some_and(|t| {
        t.text == "*"
            || t.text
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
    })
}

/// Every path below the crate root named in `tokens`, with the line of its first segment.
/// `depth` is how many `super::` reach the root from the file's top; inline `mod x { }`
/// blocks add one each.
fn crate_paths(tokens: &[Token], depth: usize) -> Vec<(Vec<String>, usize)> {
    let text = |i: usize| tokens.get(i).map_or("", |t| t.text.as_str());
    let mut out = Vec::new();
    // One entry per open brace: whether it opened an inline module.
    let mut braces: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let after_path = i > 0 && text(i - 1) == "::";
        match text(i) {
            "{" => {
                braces.push(i >= 2 && text(i - 2) == "mod");
                i += 1;
            }
            "}" => {
                braces.pop();
                i += 1;
            }
            "crate" if !after_path && text(i + 1) == "::" => {
                i = use_tree(tokens, i + 2, &[], None, &mut out);
            }
            "super" if !after_path => {
                let mut j = i;
                while text(j) == "super" && text(j + 1) == "::" {
                    j += 2;
                }
                let supers = (j - i) / 2;
                let inline = braces.iter().filter(|&&module| module).count();
                if supers > 0 && supers == depth + inline {
                    i = use_tree(tokens, j, &[], None, &mut out);
                } else {
                    i = j.max(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// Parse a path or `use` tree starting at `i` (`a::b`, `a::{b, c::{d}}`, `a as b`, `*`),
/// pushing each leaf path prefixed with `prefix`. Returns the index after the tree; stops at
/// anything that cannot continue a path, such as `(` or `<`.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    prefix: &[String],
    line: Option<usize>,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let text = |i: usize| tokens.get(i).map_or("", |t| t.text.as_str());
    if text(i) == "{" {
        i += 1;
        while i < tokens.len() && text(i) != "}" {
            let before = i;
            i = use_tree(tokens, i, prefix, line, out);
            if text(i) == "," || i == before {
                i += 1;
            }
        }
        return i + 1;
    }
    if !is_name(tokens.get(i)) {
        return i;
    }
    let mut path = prefix.to_vec();
    path.push(tokens[i].text.clone());
    let line = line.unwrap_or(tokens[i].line);
    i += 1;
    if text(i) == "::" && (text(i + 1) == "{" || is_name(tokens.get(i + 1))) {
        return use_tree(tokens, i + 1, &path, Some(line), out);
    }
    if text(i) == "as" {
        i += 2;
    }
    out.push((path, line));
    i
}
