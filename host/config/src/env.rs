//! `${VAR}` substitution, done on the raw text before parsing so that secrets and addresses can
//! come from the environment. `${VAR:-default}` supplies a default; `$${` writes a literal `${`.
//! A dotted name (`${request.id}`) is never an environment variable: it is left as written, for
//! the filters whose values are templated per request.
//! The lookup is passed in (no process-global reads here) so tests and reloads stay deterministic.

use crate::error::Diagnostic;

/// Replaces every `${NAME}` / `${NAME:-default}` in `text` using `lookup`. Unset variables
/// without a default are reported at their position.
pub fn substitute(
    file: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<Diagnostic>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    let (mut line, mut col) = (1usize, 1usize);
    while let Some(pos) = rest.find('$') {
        let (before, after) = rest.split_at(pos);
        advance(&mut line, &mut col, before);
        out.push_str(before);
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            col += 3;
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                errors.push(diag(file, line, col, "unterminated ${...}".into()));
                out.push_str(after);
                rest = "";
                break;
            };
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if name.contains('.') && default.is_none() {
                out.push_str(&after[..end + 3]);
            } else if !valid {
                errors.push(diag(
                    file,
                    line,
                    col,
                    format!("invalid variable name {name:?} in ${{...}}"),
                ));
            } else {
                match lookup(name).or_else(|| default.map(str::to_owned)) {
                    Some(v) => out.push_str(&v),
                    None => errors.push(diag(
                        file,
                        line,
                        col,
                        format!("environment variable {name} is not set (write ${{{name}:-default}} to give a default)"),
                    )),
                }
            }
            col += end + 3;
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            col += 1;
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn advance(line: &mut usize, col: &mut usize, s: &str) {
    for c in s.chars() {
        if c == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
    }
}

fn diag(file: &str, line: usize, column: usize, message: String) -> Diagnostic {
    Diagnostic {
        file: file.into(),
        line,
        column,
        field: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "9000".to_string())
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let out = substitute("f", "a: ${PORT}\nb: ${NOPE:-x}\nc: $${PORT} $5", &env).unwrap();
        assert_eq!(out, "a: 9000\nb: x\nc: ${PORT} $5");
        let out = substitute("f", "v: \"${request.id}|${PORT}\"", &env).unwrap();
        assert_eq!(
            out, "v: \"${request.id}|9000\"",
            "filter templates pass through"
        );
    }

    #[test]
    fn reports_unset_variable_with_position() {
        let err = substitute("f.yaml", "a: 1\nb: ${MISSING}\n", &env).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "f.yaml:2:4: environment variable MISSING is not set (write ${MISSING:-default} to give a default)"
        );
    }
}
