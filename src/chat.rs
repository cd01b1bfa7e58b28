//! Chat templates: the Jinja template a model ships as `tokenizer.chat_template`,
//! rendered with minijinja for a list of messages.
//!
//! Rendering follows what Hugging Face `transformers` does with the same
//! template: `trim_blocks` and `lstrip_blocks` on, the variables `messages`,
//! `add_generation_prompt`, `bos_token` and `eos_token`, the `raise_exception`
//! function, Python string methods (`.strip()`, `.startswith()`, ...), and the
//! `{% generation %}` block of assistant-mask templates (rendered as its body).
//! The environment is sandboxed: it has no loader, so templates cannot read
//! files or include other templates, there is no network access, and a fuel
//! limit stops runaway loops.

use minijinja::{Environment, ErrorKind, Value, context};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// GGUF key holding the chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// Instructions a template may execute per render (minijinja fuel); ample for
/// any real conversation, small enough to stop an endless loop quickly.
const FUEL: u64 = 10_000_000;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` (Huginn's template also accepts `Huginn`), ...
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Special token texts a template may refer to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateTokens {
    /// `bos_token`.
    pub bos: String,
    /// `eos_token`.
    pub eos: String,
}

/// A parsed chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

fn template_err(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::ChatTemplate(msg)
}

impl ChatTemplate {
    /// Parses a template.
    pub fn new(source: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(template_err)?;
        env.set_syntax(syntax);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat_template", rewrite_generation_blocks(source))
            .map_err(template_err)?;
        Ok(ChatTemplate { env })
    }

    /// The template stored in `file` as `tokenizer.chat_template`, if any.
    pub fn from_gguf(file: &GgufFile) -> Result<Option<ChatTemplate>> {
        match file.get_str(CHAT_TEMPLATE_KEY)? {
            Some(t) => Self::new(t).map(Some),
            None => Ok(None),
        }
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the
    /// header of the assistant's next turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tokens: &TemplateTokens,
    ) -> Result<String> {
        let t = self
            .env
            .get_template("chat_template")
            .map_err(template_err)?;
        t.render(context! {
            messages => messages_value(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => tokens.bos.as_str(),
            eos_token => tokens.eos.as_str(),
        })
        .map_err(template_err)
    }
}

/// The messages as a list of `{role, content}` maps.
fn messages_value(messages: &[ChatMessage]) -> Value {
    let list: Vec<Value> = messages
        .iter()
        .map(|m| {
            let map: std::collections::BTreeMap<&str, Value> = [
                ("role", Value::from(m.role.as_str())),
                ("content", Value::from(m.content.as_str())),
            ]
            .into_iter()
            .collect();
            Value::from(map)
        })
        .collect();
    Value::from(list)
}

/// Replaces `{% generation %}` / `{% endgeneration %}` (a `transformers`
/// extension marking assistant text) by an always-true `if`, keeping the
/// whitespace-control markers, so the body renders as it does there.
fn rewrite_generation_blocks(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start..].find("%}") else {
            break;
        };
        let tag = &rest[start..start + len + 2];
        let inner = &tag[2..tag.len() - 2];
        let word = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let replacement = match word {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        out.push_str(&rest[..start]);
        match replacement {
            Some(r) => {
                let lead = inner.len() - inner.trim_start_matches(['-', '+']).len();
                let trail = inner.len() - inner.trim_end_matches(['-', '+']).len();
                out.push_str("{%");
                out.push_str(&inner[..lead]);
                out.push(' ');
                out.push_str(r);
                out.push(' ');
                out.push_str(&inner[inner.len() - trail..]);
                out.push_str("%}");
            }
            None => out.push_str(tag),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_blocks() {
        assert_eq!(
            rewrite_generation_blocks(
                "a{% generation %}b{%- endgeneration -%}c{% if x %}{% endif %}"
            ),
            "a{% if true %}b{%- endif -%}c{% if x %}{% endif %}"
        );
        assert_eq!(rewrite_generation_blocks("{{ x }} {%"), "{{ x }} {%");
    }

    #[test]
    fn renders_with_python_methods_and_errors() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.role.upper() }}: {{ m.content.strip() }}\n{% endfor %}\
             {% if add_generation_prompt %}A:{% endif %}",
        )
        .unwrap();
        let msgs = [ChatMessage::new("user", "  hi  ")];
        let out = t.render(&msgs, true, &TemplateTokens::default()).unwrap();
        assert_eq!(out, "USER: hi\nA:");
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}").unwrap();
        let e = t
            .render(&msgs, false, &TemplateTokens::default())
            .unwrap_err();
        assert!(e.to_string().contains("no system role"), "{e}");
        assert!(ChatTemplate::new("{% for %}").is_err());
        // No loader: includes fail instead of reading files.
        let t = ChatTemplate::new("{% include '/etc/passwd' %}").unwrap();
        assert!(t.render(&msgs, false, &TemplateTokens::default()).is_err());
        // Endless work runs out of fuel.
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        )
        .unwrap();
        assert!(t.render(&msgs, false, &TemplateTokens::default()).is_err());
    }
}
