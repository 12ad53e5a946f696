//! Tool calling on the request side: checking `tools` / `tool_choice` /
//! `parallel_tool_calls` as vLLM does, and turning a forced choice (`"required"` or a named
//! function) into the JSON schema the output is constrained to.
//!
//! - `tool_choice` absent with tools given means `"auto"`; an empty `tools` list is no
//!   tools (`"auto"`/`"required"` then mean `"none"`).
//! - `"auto"` needs `--enable-auto-tool-choice` and a `--tool-call-parser`: without the
//!   parser it is a 400, as in vLLM; with the parser but without the flag the tools are
//!   rendered and the output is returned as plain content.
//! - `"none"` drops the tools from the prompt (vLLM's `--exclude-tools-when-tool-choice-none`).
//! - `"required"` constrains the output to a JSON array of `{"name", "parameters"}` objects
//!   (at most one with `parallel_tool_calls: false`), a named function to that function's
//!   `parameters`. Neither needs a tool-call parser: the format is the grammar's.

use crate::error::ApiError;
use lantern_parsers::tool::ToolParserKind;
use serde_json::{json, Map, Value};

/// How a choice's output becomes tool calls.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolMode {
    /// No tool calls: the output is content.
    Off,
    /// The model may call tools; this parser finds the calls in its output.
    Auto(ToolParserKind),
    /// The output is a JSON array of calls (grammar-constrained).
    Required,
    /// The output is the arguments of this function (grammar-constrained).
    Named(String),
}

/// What a request's tool fields resolve to.
#[derive(Debug, Clone)]
pub struct ResolvedTools {
    pub mode: ToolMode,
    /// The tools rendered into the prompt (`None`: the template gets `tools=None`).
    pub render: Option<Vec<Value>>,
    /// The JSON schema a forced choice constrains the output to.
    pub schema: Option<Value>,
    /// `parallel_tool_calls: false`: keep one call.
    pub single_call: bool,
}

/// The server's tool settings (`--enable-auto-tool-choice`, `--tool-call-parser`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ToolConfig {
    pub auto: bool,
    pub parser: Option<ToolParserKind>,
}

fn bad(msg: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(msg, Some(param))
}

/// `(name, parameters)` of every tool, checking the OpenAI shape
/// `{"type": "function", "function": {"name", "description"?, "parameters"?}}`.
fn functions(tools: &[Value]) -> Result<Vec<(String, Option<Value>)>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
            if kind != "function" {
                return Err(bad(
                    format!(
                        "`tools[{i}].type` `{kind}` is not supported; only `function` tools are"
                    ),
                    "tools",
                ));
            }
            let f = t
                .get("function")
                .and_then(Value::as_object)
                .ok_or_else(|| bad(format!("`tools[{i}].function` must be an object"), "tools"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    bad(
                        format!("`tools[{i}].function.name` must be a non-empty string"),
                        "tools",
                    )
                })?;
            let params = match f.get("parameters") {
                None | Some(Value::Null) => None,
                Some(p @ Value::Object(_)) => Some(p.clone()),
                Some(_) => {
                    return Err(bad(
                        format!("`tools[{i}].function.parameters` must be a JSON schema object"),
                        "tools",
                    ))
                }
            };
            Ok((name.to_string(), params))
        })
        .collect()
}

/// A tool's parameters schema, `{"type": "object", "properties": {}}` when it has none.
fn params_or_empty(p: Option<Value>) -> Value {
    p.unwrap_or_else(|| json!({"type": "object", "properties": {}}))
}

/// The schema of `"required"`: an array of at least one `{"name", "parameters"}` object,
/// one alternative per tool, with the tools' `$defs` moved to the top (their `$ref`s point
/// at `#/$defs/...`).
fn required_schema(fns: Vec<(String, Option<Value>)>, single: bool) -> Result<Value, ApiError> {
    let mut defs = Map::new();
    let mut alts = Vec::with_capacity(fns.len());
    for (name, params) in fns {
        let mut params = params_or_empty(params);
        if let Some(obj) = params.as_object_mut() {
            if let Some(d) = obj.remove("$defs") {
                let Value::Object(d) = d else {
                    return Err(bad(
                        format!("`$defs` in the parameters of tool `{name}` must be an object"),
                        "tools",
                    ));
                };
                for (k, v) in d {
                    match defs.get(&k) {
                        Some(old) if *old != v => {
                            return Err(bad(
                                format!("tools define `$defs/{k}` differently; rename one of them"),
                                "tools",
                            ))
                        }
                        _ => {
                            defs.insert(k, v);
                        }
                    }
                }
            }
        }
        alts.push(json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [name]},
                "parameters": params,
            },
            "required": ["name", "parameters"],
            "additionalProperties": false,
        }));
    }
    let mut schema = json!({
        "type": "array",
        "minItems": 1,
        "items": {"anyOf": alts},
    });
    if single {
        schema["maxItems"] = json!(1);
    }
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    Ok(schema)
}

/// Checks a chat request's tool fields and decides how its output is parsed.
pub fn resolve(
    tools: Option<&[Value]>,
    tool_choice: Option<&Value>,
    parallel_tool_calls: Option<bool>,
    config: ToolConfig,
) -> Result<ResolvedTools, ApiError> {
    let single_call = parallel_tool_calls == Some(false);
    let off = |render: Option<Vec<Value>>| ResolvedTools {
        mode: ToolMode::Off,
        render,
        schema: None,
        single_call,
    };
    let named = matches!(tool_choice, Some(Value::Object(_)));
    // An empty list is no tools: "auto" and "required" mean "none" (a named choice still
    // gets "is not one of `tools`" below).
    if tools.is_some_and(|t| t.is_empty()) && !named {
        return Ok(off(None));
    }
    let choice = match (tool_choice, tools) {
        (None | Some(Value::Null), Some(_)) => Value::from("auto"),
        (None | Some(Value::Null), None) => return Ok(off(None)),
        (Some(c), _) if c == "none" => return Ok(off(None)),
        (Some(_), None) => {
            return Err(bad(
                "when using `tool_choice`, `tools` must be set",
                "tool_choice",
            ))
        }
        (Some(c), Some(_)) => c.clone(),
    };
    let tools = tools.unwrap_or(&[]);
    let fns = functions(tools)?;
    match &choice {
        Value::String(s) if s == "none" => Ok(off(None)),
        Value::String(s) if s == "auto" => match (config.parser, config.auto) {
            (Some(p), true) => Ok(ResolvedTools {
                mode: ToolMode::Auto(p),
                render: Some(tools.to_vec()),
                schema: None,
                single_call,
            }),
            (Some(_), false) => Ok(off(Some(tools.to_vec()))),
            (None, _) => Err(bad(
                "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",
                "tool_choice",
            )),
        },
        Value::String(s) if s == "required" => Ok(ResolvedTools {
            mode: ToolMode::Required,
            render: Some(tools.to_vec()),
            schema: Some(required_schema(fns, single_call)?),
            single_call,
        }),
        Value::Object(o) => {
            let usage = r#"use `{"type": "function", "function": {"name": "my_function"}}`"#;
            let f = o.get("function").and_then(Value::as_object).ok_or_else(|| {
                bad(
                    format!("`tool_choice.function` must be an object; {usage}"),
                    "tool_choice",
                )
            })?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    bad(
                        format!("`tool_choice.function.name` must be a non-empty string; {usage}"),
                        "tool_choice",
                    )
                })?;
            let params = fns
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| p)
                .ok_or_else(|| {
                    bad(
                        format!("the tool `{name}` named in `tool_choice` is not one of `tools`"),
                        "tool_choice",
                    )
                })?;
            Ok(ResolvedTools {
                mode: ToolMode::Named(name.to_string()),
                render: Some(tools.to_vec()),
                schema: Some(params_or_empty(params)),
                single_call: true,
            })
        }
        other => Err(bad(
            format!(
                "invalid `tool_choice` {other}: use \"none\", \"auto\", \"required\" or a named function"
            ),
            "tool_choice",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tools() -> Vec<Value> {
        vec![
            json!({"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object",
                "properties": {"city": {"$ref": "#/$defs/city"}},
                "required": ["city"],
                "$defs": {"city": {"type": "string"}}
            }}}),
            json!({"type": "function", "function": {"name": "now"}}),
        ]
    }

    fn cfg(auto: bool) -> ToolConfig {
        ToolConfig {
            auto,
            parser: Some(ToolParserKind::Hermes),
        }
    }

    #[test]
    fn defaults_follow_vllm() {
        let t = tools();
        // Tools without tool_choice: auto.
        let r = resolve(Some(&t), None, None, cfg(true)).unwrap();
        assert_eq!(r.mode, ToolMode::Auto(ToolParserKind::Hermes));
        assert_eq!(r.render.unwrap().len(), 2);
        // Auto with a parser but without --enable-auto-tool-choice: plain content.
        let r = resolve(Some(&t), None, None, cfg(false)).unwrap();
        assert_eq!(r.mode, ToolMode::Off);
        assert!(r.render.is_some());
        // Auto without a parser: 400.
        let e = resolve(Some(&t), Some(&json!("auto")), None, ToolConfig::default()).unwrap_err();
        assert!(
            e.message.contains("--enable-auto-tool-choice"),
            "{}",
            e.message
        );
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        // none: no tools rendered.
        let r = resolve(Some(&t), Some(&json!("none")), None, cfg(true)).unwrap();
        assert_eq!((r.mode, r.render), (ToolMode::Off, None));
        // Empty tools: none.
        let r = resolve(Some(&[]), Some(&json!("required")), None, cfg(true)).unwrap();
        assert_eq!(r.mode, ToolMode::Off);
    }

    #[test]
    fn forced_choices_build_schemas() {
        let t = tools();
        let r = resolve(Some(&t), Some(&json!("required")), Some(false), cfg(false)).unwrap();
        assert_eq!(r.mode, ToolMode::Required);
        let s = r.schema.unwrap();
        assert_eq!(s["maxItems"], 1);
        assert_eq!(s["$defs"]["city"]["type"], "string");
        assert_eq!(
            s["items"]["anyOf"][1]["properties"]["name"]["enum"][0],
            "now"
        );
        assert!(s["items"]["anyOf"][0]["properties"]["parameters"]
            .get("$defs")
            .is_none());
        let r = resolve(
            Some(&t),
            Some(&json!({"type": "function", "function": {"name": "now"}})),
            None,
            ToolConfig::default(),
        )
        .unwrap();
        assert_eq!(r.mode, ToolMode::Named("now".into()));
        assert_eq!(r.schema.unwrap()["type"], "object");
    }

    #[test]
    fn bad_tool_fields_are_400s_naming_the_field() {
        let t = tools();
        let cases: Vec<(Option<Vec<Value>>, Value, &str)> = vec![
            (None, json!("required"), "tool_choice"),
            (
                None,
                json!({"type": "function", "function": {"name": "x"}}),
                "tool_choice",
            ),
            (Some(t.clone()), json!("sometimes"), "tool_choice"),
            (Some(t.clone()), json!({"type": "function"}), "tool_choice"),
            (
                Some(t.clone()),
                json!({"type": "function", "function": {"name": "nope"}}),
                "tool_choice",
            ),
            (
                Some(vec![json!({"type": "function"})]),
                json!("required"),
                "tools",
            ),
            (
                Some(vec![json!({"type": "web_search"})]),
                json!("required"),
                "tools",
            ),
            (
                Some(vec![
                    json!({"type": "function", "function": {"name": "f", "parameters": 3}}),
                ]),
                json!("required"),
                "tools",
            ),
        ];
        for (tools, choice, param) in cases {
            let e = resolve(tools.as_deref(), Some(&choice), None, cfg(true));
            let e = e.unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{choice}: {}", e.message);
        }
    }
}
