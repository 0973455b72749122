//! What a request can carry beyond text (contract 0.2): content blocks, tools, tool
//! choice, extended thinking, effort and structured output, and prompt-cache
//! breakpoints.
//!
//! Every type here serializes in the Messages API's own wire format, so that a
//! [`Request`](crate::Request) or [`Response`](crate::Response) written to the
//! response cache or a cassette reads like the API's JSON: image and PDF bytes as
//! base64, a tool's input and schema as JSON objects. JSON carried as text (a tool's
//! input, a schema) goes to the wire and back byte for byte (`RawValue`), so that a
//! cached tool-use answer is replayed exactly.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// How long a prompt-cache entry lives at the provider after its last use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheTtl {
    /// Five minutes (the provider's default).
    #[serde(rename = "5m")]
    FiveMinutes,
    /// One hour.
    #[serde(rename = "1h")]
    OneHour,
}

/// A prompt-cache breakpoint: `{"type": "ephemeral", "ttl": "5m" | "1h"}` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "WireCacheControl", into = "WireCacheControl")]
pub struct CacheControl {
    /// The lifetime of the cached prefix.
    pub ttl: CacheTtl,
}

impl CacheControl {
    /// A breakpoint with `ttl`.
    pub fn new(ttl: CacheTtl) -> Self {
        Self { ttl }
    }
}

#[derive(Serialize, Deserialize)]
struct WireCacheControl {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<CacheTtl>,
}

impl TryFrom<WireCacheControl> for CacheControl {
    type Error = String;
    fn try_from(w: WireCacheControl) -> Result<Self, String> {
        if w.kind != "ephemeral" {
            return Err(format!("unknown cache_control type {:?}", w.kind));
        }
        Ok(Self {
            ttl: w.ttl.unwrap_or(CacheTtl::FiveMinutes),
        })
    }
}

impl From<CacheControl> for WireCacheControl {
    fn from(c: CacheControl) -> Self {
        Self {
            kind: "ephemeral".into(),
            ttl: Some(c.ttl),
        }
    }
}

/// The formats of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageMediaType {
    /// `image/jpeg`.
    #[serde(rename = "image/jpeg")]
    Jpeg,
    /// `image/png`.
    #[serde(rename = "image/png")]
    Png,
    /// `image/gif`.
    #[serde(rename = "image/gif")]
    Gif,
    /// `image/webp`.
    #[serde(rename = "image/webp")]
    Webp,
}

/// An image: its format and its encoded bytes (base64 on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Image {
    /// The format of `data`.
    pub media_type: ImageMediaType,
    /// The encoded image.
    pub data: Vec<u8>,
}

/// What a document holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DocumentSource {
    /// A PDF file's bytes.
    Pdf(Vec<u8>),
    /// Plain text.
    PlainText(String),
}

/// One part of a tool's result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ToolResultContent {
    /// Text.
    Text(String),
    /// An image.
    Image(Image),
}

/// One block of a message's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// A prompt-cache breakpoint after this block.
        cache_control: Option<CacheControl>,
    },
    /// An image.
    Image {
        /// The image.
        image: Image,
        /// A prompt-cache breakpoint after this block.
        cache_control: Option<CacheControl>,
    },
    /// A document.
    Document {
        /// Its content.
        source: DocumentSource,
        /// Its title.
        title: Option<String>,
        /// A prompt-cache breakpoint after this block.
        cache_control: Option<CacheControl>,
    },
    /// The model asks to use a tool.
    ToolUse {
        /// The provider's id of this use.
        id: String,
        /// The tool's name.
        name: String,
        /// The input: a JSON object, as the text the provider sent.
        input: String,
    },
    /// The result of a tool use.
    ToolResult {
        /// The id of the tool use it answers.
        tool_use_id: String,
        /// The result.
        content: Vec<ToolResultContent>,
        /// Whether the tool failed.
        is_error: bool,
        /// A prompt-cache breakpoint after this block.
        cache_control: Option<CacheControl>,
    },
    /// The model's reasoning and the provider's signature over it.
    Thinking {
        /// The reasoning.
        thinking: String,
        /// The signature, returned byte for byte.
        signature: String,
    },
    /// Reasoning the provider encrypted.
    RedactedThinking {
        /// The opaque payload.
        data: String,
    },
}

impl ContentBlock {
    /// A text block without a cache breakpoint.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            cache_control: None,
        }
    }

    /// The block's cache breakpoint, if it can carry one.
    pub fn cache_control(&self) -> Option<CacheControl> {
        match self {
            Self::Text { cache_control, .. }
            | Self::Image { cache_control, .. }
            | Self::Document { cache_control, .. }
            | Self::ToolResult { cache_control, .. } => *cache_control,
            Self::ToolUse { .. } | Self::Thinking { .. } | Self::RedactedThinking { .. } => None,
        }
    }

    /// Bytes of the block's content (text, encoded media, JSON), for the host's caps
    /// and token estimates.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Text { text, .. } => text.len(),
            Self::Image { image, .. } => image.data.len(),
            Self::Document { source, title, .. } => {
                title.as_ref().map_or(0, String::len)
                    + match source {
                        DocumentSource::Pdf(b) => b.len(),
                        DocumentSource::PlainText(t) => t.len(),
                    }
            }
            Self::ToolUse { id, name, input } => id.len() + name.len() + input.len(),
            Self::ToolResult {
                tool_use_id,
                content,
                ..
            } => {
                tool_use_id.len()
                    + content
                        .iter()
                        .map(|c| match c {
                            ToolResultContent::Text(t) => t.len(),
                            ToolResultContent::Image(i) => i.data.len(),
                        })
                        .sum::<usize>()
            }
            Self::Thinking {
                thinking,
                signature,
            } => thinking.len() + signature.len(),
            Self::RedactedThinking { data } => data.len(),
        }
    }

    /// The block's wire `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Image { .. } => "image",
            Self::Document { .. } => "document",
            Self::ToolUse { .. } => "tool_use",
            Self::ToolResult { .. } => "tool_result",
            Self::Thinking { .. } => "thinking",
            Self::RedactedThinking { .. } => "redacted_thinking",
        }
    }
}

/// A tool the model may ask to use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tool {
    /// Its name, `^[a-zA-Z0-9_-]{1,64}$`.
    pub name: String,
    /// What it does; `None` sends none.
    pub description: Option<String>,
    /// The JSON Schema of its input, as text (a JSON object).
    pub input_schema: String,
    /// Ask the provider to guarantee inputs match the schema.
    pub strict: bool,
    /// A prompt-cache breakpoint after this tool.
    pub cache_control: Option<CacheControl>,
}

/// Which tool, if any, the model must use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must use a tool.
    Any,
    /// The model must use the named tool.
    Tool(String),
    /// The model may not use tools.
    None,
}

/// Extended thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Thinking {
    /// Off.
    Disabled,
    /// On, with a budget of output tokens.
    Enabled {
        /// Tokens the model may spend thinking (≥ 1024, < `max_tokens`).
        budget_tokens: u32,
    },
    /// The model decides.
    Adaptive,
}

/// How much effort the model spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effort {
    /// The least.
    Low,
    /// Between.
    Medium,
    /// The default.
    High,
    /// The most.
    Max,
}

impl Effort {
    /// The wire value.
    pub fn as_wire(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Max => "max",
        }
    }
}

/// A JSON text that must be valid JSON, as a raw value for the wire.
pub(crate) fn raw_json<E: serde::ser::Error>(text: &str) -> Result<&RawValue, E> {
    serde_json::from_str::<&RawValue>(text).map_err(|e| E::custom(format!("invalid JSON: {e}")))
}

// ---- wire (de)serialization -----------------------------------------------------

#[derive(Serialize, Deserialize)]
struct WireBase64Source<M> {
    #[serde(rename = "type")]
    kind: String,
    media_type: M,
    data: String,
}

fn base64_source<M>(media_type: M, bytes: &[u8]) -> WireBase64Source<M> {
    WireBase64Source {
        kind: "base64".into(),
        media_type,
        data: BASE64.encode(bytes),
    }
}

fn decode_base64<E: serde::de::Error>(data: &str) -> Result<Vec<u8>, E> {
    BASE64
        .decode(data)
        .map_err(|e| E::custom(format!("invalid base64: {e}")))
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WireDocumentSource {
    Base64(WireBase64Source<String>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireToolResultOut<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: WireBase64Source<ImageMediaType>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlockOut<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    Image {
        source: WireBase64Source<ImageMediaType>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    Document {
        source: WireBase64Source<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: Vec<WireToolResultOut<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

impl Serialize for ContentBlock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let out = match self {
            Self::Text {
                text,
                cache_control,
            } => WireBlockOut::Text {
                text,
                cache_control: *cache_control,
            },
            Self::Image {
                image,
                cache_control,
            } => WireBlockOut::Image {
                source: base64_source(image.media_type, &image.data),
                cache_control: *cache_control,
            },
            Self::Document {
                source,
                title,
                cache_control,
            } => WireBlockOut::Document {
                // A plain-text document is `{"type": "text", "media_type": "text/plain",
                // "data": …}` on the wire.
                source: match source {
                    DocumentSource::Pdf(bytes) => base64_source("application/pdf", bytes),
                    DocumentSource::PlainText(text) => WireBase64Source {
                        kind: "text".into(),
                        media_type: "text/plain",
                        data: text.clone(),
                    },
                },
                title: title.as_deref(),
                cache_control: *cache_control,
            },
            Self::ToolUse { id, name, input } => WireBlockOut::ToolUse {
                id,
                name,
                input: raw_json(input)?,
            },
            Self::ToolResult {
                tool_use_id,
                content,
                is_error,
                cache_control,
            } => WireBlockOut::ToolResult {
                tool_use_id,
                content: content
                    .iter()
                    .map(|c| match c {
                        ToolResultContent::Text(text) => WireToolResultOut::Text { text },
                        ToolResultContent::Image(i) => WireToolResultOut::Image {
                            source: base64_source(i.media_type, &i.data),
                        },
                    })
                    .collect(),
                is_error: *is_error,
                cache_control: *cache_control,
            },
            Self::Thinking {
                thinking,
                signature,
            } => WireBlockOut::Thinking {
                thinking,
                signature,
            },
            Self::RedactedThinking { data } => WireBlockOut::RedactedThinking { data },
        };
        out.serialize(s)
    }
}

#[derive(Deserialize)]
struct WireTag {
    #[serde(rename = "type")]
    kind: String,
}

/// Parses `raw` as `T`, naming the block type in the error.
fn parse_as<'de, T: Deserialize<'de>, E: serde::de::Error>(raw: &'de RawValue) -> Result<T, E> {
    serde_json::from_str(raw.get()).map_err(|e| E::custom(e.to_string()))
}

fn parse_image<E: serde::de::Error>(source: WireBase64Source<ImageMediaType>) -> Result<Image, E> {
    if source.kind != "base64" {
        return Err(E::custom(format!(
            "unsupported image source type {:?}",
            source.kind
        )));
    }
    Ok(Image {
        media_type: source.media_type,
        data: decode_base64(&source.data)?,
    })
}

/// A tool result's `content`: a string, or a list of text and image blocks.
fn parse_tool_result_content<E: serde::de::Error>(
    raw: &RawValue,
) -> Result<Vec<ToolResultContent>, E> {
    if raw.get().trim_start().starts_with('"') {
        let text: String = parse_as(raw)?;
        return Ok(vec![ToolResultContent::Text(text)]);
    }
    let blocks: Vec<&RawValue> = parse_as(raw)?;
    blocks
        .into_iter()
        .map(|b| {
            let tag: WireTag = parse_as(b)?;
            match tag.kind.as_str() {
                "text" => {
                    #[derive(Deserialize)]
                    struct T {
                        text: String,
                    }
                    Ok(ToolResultContent::Text(parse_as::<T, E>(b)?.text))
                }
                "image" => {
                    #[derive(Deserialize)]
                    struct I {
                        source: WireBase64Source<ImageMediaType>,
                    }
                    Ok(ToolResultContent::Image(parse_image(
                        parse_as::<I, E>(b)?.source,
                    )?))
                }
                other => Err(E::custom(format!(
                    "unknown tool_result content type {other:?}"
                ))),
            }
        })
        .collect()
}

impl<'de> Deserialize<'de> for ContentBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through `RawValue`, so that a tool's input keeps its exact bytes.
        let raw: Box<RawValue> = Box::deserialize(d)?;
        let tag: WireTag = parse_as(&raw)?;
        let block = match tag.kind.as_str() {
            "text" => {
                #[derive(Deserialize)]
                struct T {
                    text: String,
                    #[serde(default)]
                    cache_control: Option<CacheControl>,
                }
                let t: T = parse_as(&raw)?;
                Self::Text {
                    text: t.text,
                    cache_control: t.cache_control,
                }
            }
            "image" => {
                #[derive(Deserialize)]
                struct I {
                    source: WireBase64Source<ImageMediaType>,
                    #[serde(default)]
                    cache_control: Option<CacheControl>,
                }
                let i: I = parse_as(&raw)?;
                Self::Image {
                    image: parse_image(i.source)?,
                    cache_control: i.cache_control,
                }
            }
            "document" => {
                #[derive(Deserialize)]
                struct Doc {
                    source: WireDocumentSource,
                    #[serde(default)]
                    title: Option<String>,
                    #[serde(default)]
                    cache_control: Option<CacheControl>,
                }
                let doc: Doc = parse_as(&raw)?;
                let WireDocumentSource::Base64(src) = doc.source;
                let source = match (src.kind.as_str(), src.media_type.as_str()) {
                    ("base64", "application/pdf") => DocumentSource::Pdf(decode_base64(&src.data)?),
                    ("text", "text/plain") => DocumentSource::PlainText(src.data),
                    (kind, media) => {
                        return Err(D::Error::custom(format!(
                            "unsupported document source {kind:?} of type {media:?}"
                        )));
                    }
                };
                Self::Document {
                    source,
                    title: doc.title,
                    cache_control: doc.cache_control,
                }
            }
            "tool_use" => {
                #[derive(Deserialize)]
                struct U<'a> {
                    id: String,
                    name: String,
                    #[serde(borrow)]
                    input: &'a RawValue,
                }
                let u: U<'_> = parse_as(&raw)?;
                if !u.input.get().trim_start().starts_with('{') {
                    return Err(D::Error::custom("a tool_use input must be a JSON object"));
                }
                Self::ToolUse {
                    id: u.id,
                    name: u.name,
                    input: u.input.get().to_owned(),
                }
            }
            "tool_result" => {
                #[derive(Deserialize)]
                struct R<'a> {
                    tool_use_id: String,
                    #[serde(borrow, default)]
                    content: Option<&'a RawValue>,
                    #[serde(default)]
                    is_error: bool,
                    #[serde(default)]
                    cache_control: Option<CacheControl>,
                }
                let r: R<'_> = parse_as(&raw)?;
                Self::ToolResult {
                    tool_use_id: r.tool_use_id,
                    content: match r.content {
                        Some(c) => parse_tool_result_content(c)?,
                        None => Vec::new(),
                    },
                    is_error: r.is_error,
                    cache_control: r.cache_control,
                }
            }
            "thinking" => {
                #[derive(Deserialize)]
                struct Th {
                    thinking: String,
                    signature: String,
                }
                let t: Th = parse_as(&raw)?;
                Self::Thinking {
                    thinking: t.thinking,
                    signature: t.signature,
                }
            }
            "redacted_thinking" => {
                #[derive(Deserialize)]
                struct Rt {
                    data: String,
                }
                Self::RedactedThinking {
                    data: parse_as::<Rt, D::Error>(&raw)?.data,
                }
            }
            other => {
                return Err(D::Error::custom(format!(
                    "unknown content block type {:?}",
                    crate::wire::truncate_chars(other, 40)
                )));
            }
        };
        Ok(block)
    }
}

#[derive(Serialize)]
struct WireToolOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a RawValue,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    strict: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheControl>,
}

impl Serialize for Tool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireToolOut {
            name: &self.name,
            description: self.description.as_deref(),
            input_schema: raw_json(&self.input_schema)?,
            strict: self.strict,
            cache_control: self.cache_control,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct W {
            name: String,
            #[serde(default)]
            description: Option<String>,
            input_schema: Box<RawValue>,
            #[serde(default)]
            strict: bool,
            #[serde(default)]
            cache_control: Option<CacheControl>,
        }
        let w = W::deserialize(d)?;
        Ok(Self {
            name: w.name,
            description: w.description,
            input_schema: w.input_schema.get().to_owned(),
            strict: w.strict,
            cache_control: w.cache_control,
        })
    }
}

/// A message's content: one string (what contract 0.1.0 sends) or a list of blocks.
/// A single text block without a cache breakpoint means the same to the API as a
/// string, and [`Content::normalized`] turns one into the other so that both share
/// a response-cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Blocks.
    Blocks(Vec<ContentBlock>),
}

impl Content {
    /// Blocks that mean plain text (one text block without a breakpoint) become
    /// [`Content::Text`].
    pub fn normalized(self) -> Self {
        match self {
            Self::Blocks(mut blocks)
                if blocks.len() == 1
                    && matches!(
                        &blocks[0],
                        ContentBlock::Text {
                            cache_control: None,
                            ..
                        }
                    ) =>
            {
                match blocks.pop() {
                    Some(ContentBlock::Text { text, .. }) => Self::Text(text),
                    _ => unreachable!("checked above"),
                }
            }
            other => other,
        }
    }

    /// The content as blocks (plain text as one text block).
    pub fn blocks(&self) -> std::borrow::Cow<'_, [ContentBlock]> {
        match self {
            Self::Text(text) => std::borrow::Cow::Owned(vec![ContentBlock::text(text.clone())]),
            Self::Blocks(blocks) => std::borrow::Cow::Borrowed(blocks),
        }
    }

    /// Every text of the content (text blocks only), concatenated.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Text(text) => std::borrow::Cow::Borrowed(text),
            Self::Blocks(blocks) => std::borrow::Cow::Owned(
                blocks
                    .iter()
                    .filter_map(|b| match b {
                        ContentBlock::Text { text, .. } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect(),
            ),
        }
    }

    /// True for no text and no blocks.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Text(text) => text.is_empty(),
            Self::Blocks(blocks) => blocks.is_empty(),
        }
    }

    /// Bytes of the content (see [`ContentBlock::bytes`]).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Blocks(blocks) => blocks.iter().map(ContentBlock::bytes).sum(),
        }
    }
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl Serialize for Content {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => text.serialize(s),
            Self::Blocks(blocks) => blocks.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Not `#[serde(untagged)]`: that buffers the value, and the blocks need the
        // raw JSON (see `ContentBlock`'s `Deserialize`).
        let raw: Box<RawValue> = Box::deserialize(d)?;
        if raw.get().trim_start().starts_with('"') {
            Ok(Self::Text(parse_as(&raw)?))
        } else {
            Ok(Self::Blocks(parse_as(&raw)?))
        }
    }
}

/// A system prompt: one string, or text blocks that may carry cache breakpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum System {
    /// Plain text.
    Text(String),
    /// Text blocks.
    Blocks(Vec<TextBlock>),
}

/// A text block of a system prompt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename = "text")]
pub struct TextBlock {
    /// The text.
    pub text: String,
    /// A prompt-cache breakpoint after this block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

impl System {
    /// Every text of the prompt, concatenated.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Text(t) => std::borrow::Cow::Borrowed(t),
            Self::Blocks(b) => std::borrow::Cow::Owned(b.iter().map(|b| b.text.as_str()).collect()),
        }
    }

    /// Bytes of text.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Blocks(b) => b.iter().map(|b| b.text.len()).sum(),
        }
    }

    /// Blocks that mean plain text (one block without a breakpoint) become
    /// [`System::Text`]; no blocks or an empty text mean no system prompt.
    pub fn normalized(self) -> Option<Self> {
        match self {
            Self::Text(t) if t.is_empty() => None,
            Self::Blocks(b) if b.is_empty() => None,
            Self::Blocks(mut b) if b.len() == 1 && b[0].cache_control.is_none() => {
                b.pop().map(|b| Self::Text(b.text))
            }
            other => Some(other),
        }
    }
}

impl From<String> for System {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for System {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl Serialize for System {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => text.serialize(s),
            Self::Blocks(blocks) => blocks.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for System {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum W {
            Text(String),
            Blocks(Vec<TextBlock>),
        }
        Ok(match W::deserialize(d)? {
            W::Text(t) => Self::Text(t),
            W::Blocks(b) => Self::Blocks(b),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(block: &ContentBlock) -> ContentBlock {
        let text = serde_json::to_string(block).expect("serializes");
        serde_json::from_str(&text).expect("parses")
    }

    #[test]
    fn every_block_round_trips_in_the_wire_format() {
        let png = Image {
            media_type: ImageMediaType::Png,
            data: vec![0x89, b'P', b'N', b'G', 0, 255],
        };
        let breakpoint = Some(CacheControl::new(CacheTtl::OneHour));
        let blocks = [
            ContentBlock::Text {
                text: "hi".into(),
                cache_control: breakpoint,
            },
            ContentBlock::Image {
                image: png.clone(),
                cache_control: None,
            },
            ContentBlock::Document {
                source: DocumentSource::Pdf(b"%PDF-1.7".to_vec()),
                title: Some("spec".into()),
                cache_control: None,
            },
            ContentBlock::Document {
                source: DocumentSource::PlainText("plain".into()),
                title: None,
                cache_control: breakpoint,
            },
            ContentBlock::ToolUse {
                id: "toolu_1".into(),
                name: "add".into(),
                input: r#"{"b": 2,  "a":1}"#.into(),
            },
            ContentBlock::ToolResult {
                tool_use_id: "toolu_1".into(),
                content: vec![
                    ToolResultContent::Text("3".into()),
                    ToolResultContent::Image(png),
                ],
                is_error: true,
                cache_control: None,
            },
            ContentBlock::Thinking {
                thinking: "let me see".into(),
                signature: "c2lnbmF0dXJl+/=".into(),
            },
            ContentBlock::RedactedThinking {
                data: "opaque".into(),
            },
        ];
        for block in &blocks {
            assert_eq!(&round_trip(block), block);
        }
        let wire: serde_json::Value =
            serde_json::to_value(&blocks[1]).expect("serializes to a value");
        assert_eq!(
            wire,
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORwD/"}})
        );
        // The tool input keeps its exact bytes, key order and spacing included.
        let text = serde_json::to_string(&blocks[4]).expect("serializes");
        assert!(text.contains(r#""input":{"b": 2,  "a":1}"#), "{text}");
        let tc: serde_json::Value = serde_json::to_value(&blocks[0]).expect("value");
        assert_eq!(
            tc["cache_control"],
            json!({"type": "ephemeral", "ttl": "1h"})
        );
    }

    #[test]
    fn malformed_blocks_are_errors() {
        for bad in [
            json!({"type": "video"}),
            json!({"type": "text"}),
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "***"}}),
            json!({"type": "image", "source": {"type": "url", "media_type": "image/png", "data": ""}}),
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": ""}}),
            json!({"type": "tool_use", "id": "t", "name": "n", "input": [1]}),
            json!({"type": "text", "text": "x", "cache_control": {"type": "forever"}}),
            json!({"type": "thinking", "thinking": "x"}),
        ] {
            let parsed = serde_json::from_str::<ContentBlock>(&bad.to_string());
            assert!(parsed.is_err(), "{bad} parsed as {parsed:?}");
        }
        // A missing TTL is the API's default, five minutes.
        let b: ContentBlock = serde_json::from_str(
            r#"{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}"#,
        )
        .expect("parses");
        assert_eq!(
            b.cache_control(),
            Some(CacheControl::new(CacheTtl::FiveMinutes))
        );
    }

    #[test]
    fn one_plain_text_block_means_a_string() {
        let one = Content::Blocks(vec![ContentBlock::text("x")]).normalized();
        assert_eq!(one, Content::Text("x".into()));
        let cached = Content::Blocks(vec![ContentBlock::Text {
            text: "x".into(),
            cache_control: Some(CacheControl::new(CacheTtl::FiveMinutes)),
        }]);
        assert_eq!(cached.clone().normalized(), cached);
        assert_eq!(
            System::Blocks(vec![TextBlock {
                text: "s".into(),
                cache_control: None
            }])
            .normalized(),
            Some(System::Text("s".into()))
        );
        assert_eq!(System::Blocks(vec![]).normalized(), None);
        let c: Content = serde_json::from_str(r#""plain""#).expect("a string");
        assert_eq!(c, Content::Text("plain".into()));
        let c: Content =
            serde_json::from_str(r#"[{"type":"text","text":"a"},{"type":"text","text":"b"}]"#)
                .expect("blocks");
        assert_eq!(c.text(), "ab");
    }
}
