//! Tools the model may ask to use, which the agent runs itself, and the loop that
//! runs them ([`Request::run_tools`]).

use crate::llm::{
    CacheTtl, ContentBlock, LlmError, LlmRequest, Message, Request, Response, Role, ToolDefinition,
    Usage, complete, json_schema,
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::rc::Rc;

/// A handler: the tool's input as JSON text in, its result out.
///
/// Behind `dyn Handle` rather than `RefCell<dyn FnMut>` so that `Tool<'a>` is covariant
/// in `'a`: a `Tool<'static>` fits a request whose other tools borrow.
type Handler<'a> = Rc<dyn Handle + 'a>;

trait Handle {
    /// Runs the handler; `None` when it is already running (it called itself).
    fn handle(&self, input: &str) -> Option<Result<String, String>>;
}

impl<F: FnMut(&str) -> Result<String, String>> Handle for RefCell<F> {
    fn handle(&self, input: &str) -> Option<Result<String, String>> {
        let mut handler = self.try_borrow_mut().ok()?;
        Some(handler(input))
    }
}

/// A tool: a name, a description, the JSON Schema of its input, and the handler that
/// runs it when the model asks.
///
/// The handler returns `Ok(output)` or `Err(message)`; an error goes back to the model
/// as an `is-error` result, and the model may try again. A handler may use the store,
/// the log, or call a model itself.
///
/// ```no_run
/// use cf_agent_sdk::llm::Tool;
///
/// /// A root-cause hypothesis about the bug.
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct RecordHypothesis {
///     /// One sentence.
///     hypothesis: String,
///     /// How likely, from 0 to 1.
///     likelihood: f32,
/// }
///
/// let mut seen = Vec::new();
/// let record = Tool::new::<RecordHypothesis>("record_hypothesis", "Records a hypothesis.", |h| {
///     seen.push(h.hypothesis);
///     Ok("recorded".into())
/// });
/// ```
#[derive(Clone)]
pub struct Tool<'a> {
    pub(crate) definition: ToolDefinition,
    handler: Handler<'a>,
}

impl std::fmt::Debug for Tool<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("definition", &self.definition)
            .finish_non_exhaustive()
    }
}

impl<'a> Tool<'a> {
    /// A tool whose input is an `I`, its schema derived with `schemars`
    /// ([`json_schema`]). An input that does not deserialize into `I` is answered,
    /// without calling the handler, with an error result that says why.
    ///
    /// `name` must match `^[a-zA-Z0-9_-]{1,64}$` (the host refuses others).
    pub fn new<I: DeserializeOwned + JsonSchema>(
        name: impl Into<String>,
        description: impl Into<String>,
        handler: impl FnMut(I) -> Result<String, String> + 'a,
    ) -> Self {
        Self::with_schema(name, description, json_schema::<I>(), handler)
    }

    /// As [`new`](Self::new), with `I`'s schema given as text instead of derived:
    /// every run of an agent is a fresh instance, so a derived schema is derived again
    /// by each run. An agent can write [`json_schema::<I>()`](json_schema) out once,
    /// as a constant kept equal to the type by a test (as
    /// [`Request::structured_with_schema`](crate::llm::Request::structured_with_schema)
    /// shows).
    pub fn with_schema<I: DeserializeOwned>(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: impl Into<String>,
        mut handler: impl FnMut(I) -> Result<String, String> + 'a,
    ) -> Self {
        let name = name.into();
        let label = name.clone();
        Self::from_fn(
            name,
            description.into(),
            input_schema.into(),
            move |input| {
                let input = serde_json::from_str::<I>(input).map_err(|e| {
                    format!("the input does not match the schema of `{label}`: {e}")
                })?;
                handler(input)
            },
        )
    }

    /// A tool with a hand-written input schema (JSON Schema as text; the host refuses
    /// one that is not a JSON object). The handler gets the input as parsed JSON.
    pub fn raw(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: impl Into<String>,
        mut handler: impl FnMut(serde_json::Value) -> Result<String, String> + 'a,
    ) -> Self {
        Self::from_fn(
            name.into(),
            description.into(),
            input_schema.into(),
            move |input| {
                let input = serde_json::from_str(input)
                    .map_err(|e| format!("the input is not JSON: {e}"))?;
                handler(input)
            },
        )
    }

    fn from_fn(
        name: String,
        description: String,
        input_schema: String,
        handler: impl FnMut(&str) -> Result<String, String> + 'a,
    ) -> Self {
        Self {
            definition: ToolDefinition {
                name,
                description,
                input_schema,
                strict: false,
                cache_control: None,
            },
            handler: Rc::new(RefCell::new(handler)),
        }
    }

    /// Asks the provider to guarantee that inputs match the schema.
    pub fn strict(mut self) -> Self {
        self.definition.strict = true;
        self
    }

    /// Puts a prompt-cache breakpoint after this tool (the provider caches the tools up
    /// to here). Same as [`Request::cache_breakpoint`] right after adding it.
    pub fn cache_breakpoint(mut self, ttl: CacheTtl) -> Self {
        self.definition.cache_control = Some(ttl.into());
        self
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.definition.name
    }

    /// The definition the model sees.
    pub fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    /// Runs the handler on an input given as JSON text, as the tool loop does.
    ///
    /// A handler that calls its own tool again (through a request that shares it) gets
    /// an error result rather than a second, overlapping run.
    pub fn call(&self, input: &str) -> Result<String, String> {
        self.handler.handle(input).unwrap_or_else(|| {
            Err(format!(
                "the tool `{}` is already running (its handler called it again)",
                self.name()
            ))
        })
    }
}

/// A finished tool loop ([`Request::run_tools`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ToolRun {
    /// The last answer. Its `stop_reason` says why the loop ended; it is
    /// [`StopReason::ToolUse`](crate::llm::StopReason::ToolUse) only when
    /// `max_turns_reached`.
    pub response: Response,
    /// Model calls made (at least 1).
    pub turns: u32,
    /// The usage of each call, in order.
    pub turn_usage: Vec<Usage>,
    /// The usage of all calls, summed.
    pub usage: Usage,
    /// Tool uses answered (unknown tools and bad inputs included).
    pub tool_calls: u32,
    /// True when the loop stopped because it had made `max_turns` calls while the
    /// model still asked for tools. Those last tool uses were not run: `messages`
    /// ends with the assistant turn that asked for them.
    pub max_turns_reached: bool,
    /// The whole conversation: the request's turns, then each assistant turn as
    /// received and the user turn of tool results that answered it, ending with the
    /// last answer (when it had any content).
    pub messages: Vec<Message>,
}

impl ToolRun {
    /// The last answer's text.
    pub fn text(&self) -> &str {
        &self.response.text
    }

    /// The model's reasoning over the whole loop, block by block, oldest first.
    pub fn thinking(&self) -> impl Iterator<Item = &str> {
        self.messages
            .iter()
            .filter(|m| matches!(m.role, Role::Assistant))
            .flat_map(|m| &m.content)
            .filter_map(|b| match b {
                ContentBlock::Thinking(t) => Some(t.thinking.as_str()),
                _ => None,
            })
    }
}

/// A model call of a tool loop failed; what the loop had done before is kept.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ToolRunError {
    /// Why the call failed.
    pub error: LlmError,
    /// Model calls that succeeded before.
    pub turns: u32,
    /// Their usage, in order ([`usage`](Self::usage) sums it).
    pub turn_usage: Vec<Usage>,
    /// Tool uses answered before.
    pub tool_calls: u32,
    /// The conversation as it was sent in the failed call.
    pub messages: Vec<Message>,
}

impl ToolRunError {
    /// The usage of the calls that succeeded, summed.
    pub fn usage(&self) -> Usage {
        self.turn_usage.iter().copied().sum()
    }
}

impl std::fmt::Display for ToolRunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "model call {} of the tool loop failed: {}",
            self.turns + 1,
            self.error
        )
    }
}

impl std::error::Error for ToolRunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<ToolRunError> for LlmError {
    fn from(e: ToolRunError) -> Self {
        e.error
    }
}

/// Becomes [`AgentError::Llm`](crate::AgentError::Llm) with the failed call's error.
impl From<ToolRunError> for crate::AgentError {
    fn from(e: ToolRunError) -> Self {
        crate::AgentError::Llm(e.error)
    }
}

impl Request<'_> {
    /// Runs a tool loop: sends the request; while the model stops to use tools, runs
    /// each tool it asked for, appends its answer exactly as received (thinking blocks
    /// and their signatures included) and one user turn with every tool's result in
    /// the order asked, and sends again.
    ///
    /// A tool the request does not offer, or an input that does not deserialize, is
    /// answered with an `is-error` result that says why, and the loop goes on. The
    /// loop ends when the model stops for any other reason (`end-turn`, `max-tokens`,
    /// `pause-turn`, `refusal`, …), or asks for tools without naming any, or after
    /// `max_turns` model calls: then [`ToolRun::max_turns_reached`] is set and the last
    /// answer's tool uses are not run. The host's own limits (model calls per run,
    /// deadline, budget) still apply and end the loop with an error.
    ///
    /// `max_turns` of 0 makes no call and fails with `invalid-request`. A failed call
    /// is a [`ToolRunError`], which keeps the usage and conversation so far.
    pub fn run_tools(self, max_turns: u32) -> Result<ToolRun, ToolRunError> {
        self.run_tools_with(max_turns, complete)
    }

    /// [`run_tools`](Self::run_tools) with the model call given (a test double in
    /// tests).
    fn run_tools_with(
        mut self,
        max_turns: u32,
        mut send: impl FnMut(&LlmRequest) -> Result<Response, LlmError>,
    ) -> Result<ToolRun, ToolRunError> {
        let mut done = Progress::default();
        if max_turns == 0 {
            let error = LlmError::InvalidRequest("run_tools needs max_turns of at least 1".into());
            return Err(done.failed(error, self.wire.messages));
        }
        loop {
            let response = match send(&self.wire) {
                Ok(r) => r,
                Err(error) => return Err(done.failed(error, self.wire.messages)),
            };
            done.turns += 1;
            done.usage += response.usage;
            done.turn_usage.push(response.usage);
            if !response.content.is_empty() {
                self.wire.messages.push(response.to_message());
            }
            let asked = response.wants_tools() && response.tool_uses().next().is_some();
            if !asked || done.turns == max_turns {
                return Ok(ToolRun {
                    max_turns_reached: asked,
                    response,
                    turns: done.turns,
                    turn_usage: done.turn_usage,
                    usage: done.usage,
                    tool_calls: done.tool_calls,
                    messages: self.wire.messages,
                });
            }
            let results = response
                .tool_uses()
                .map(|u| ContentBlock::tool_result(&u.id, self.call_tool(&u.name, &u.input)))
                .collect::<Vec<_>>();
            done.tool_calls = done.tool_calls.saturating_add(results.len() as u32);
            self.wire.messages.push(Message {
                role: Role::User,
                content: results,
            });
        }
    }

    /// Runs the tool named `name`, or explains that there is none.
    fn call_tool(&self, name: &str, input: &str) -> Result<String, String> {
        match self.tools.iter().find(|t| t.name() == name) {
            Some(tool) => tool.call(input),
            None => {
                let offered = self
                    .tools
                    .iter()
                    .map(|t| format!("`{}`", t.name()))
                    .collect::<Vec<_>>();
                Err(format!(
                    "there is no tool `{name}`; the tools are: {}",
                    if offered.is_empty() {
                        "none".to_owned()
                    } else {
                        offered.join(", ")
                    }
                ))
            }
        }
    }
}

/// What a tool loop has done so far.
#[derive(Default)]
struct Progress {
    turns: u32,
    turn_usage: Vec<Usage>,
    usage: Usage,
    tool_calls: u32,
}

impl Progress {
    fn failed(self, error: LlmError, messages: Vec<Message>) -> ToolRunError {
        ToolRunError {
            error,
            turns: self.turns,
            turn_usage: self.turn_usage,
            tool_calls: self.tool_calls,
            messages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{StopReason, ThinkingBlock, ToolResultContent, ToolUseBlock};
    use std::collections::VecDeque;

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    struct Add {
        a: i64,
        b: i64,
    }

    fn add() -> Tool<'static> {
        Tool::new::<Add>("add", "Adds.", |x| Ok((x.a + x.b).to_string()))
    }

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    fn answer(stop_reason: StopReason, content: Vec<ContentBlock>, u: Usage) -> Response {
        let text = content
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text(t) => Some(t.text.as_str()),
                _ => None,
            })
            .collect();
        Response {
            id: "msg".into(),
            model: "m".into(),
            content,
            text,
            stop_reason,
            usage: u,
            cached: false,
        }
    }

    fn tool_use(id: &str, name: &str, input: &str) -> ContentBlock {
        ContentBlock::ToolUse(ToolUseBlock {
            id: id.into(),
            name: name.into(),
            input: input.into(),
        })
    }

    /// A model that answers from a script and records every request it was sent.
    struct Scripted {
        answers: VecDeque<Result<Response, LlmError>>,
        sent: Vec<LlmRequest>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<Response, LlmError>>) -> Self {
            Self {
                answers: answers.into(),
                sent: Vec::new(),
            }
        }

        fn send(&mut self, request: &LlmRequest) -> Result<Response, LlmError> {
            self.sent.push(request.clone());
            self.answers.pop_front().expect("the script has an answer")
        }
    }

    /// The (is_error, text) of each tool result of a user turn.
    fn results(message: &Message) -> Vec<(String, bool, String)> {
        assert!(matches!(message.role, Role::User));
        message
            .content
            .iter()
            .map(|b| match b {
                ContentBlock::ToolResult(r) => (
                    r.tool_use_id.clone(),
                    r.is_error,
                    match r.content.as_slice() {
                        [ToolResultContent::Text(t)] => t.clone(),
                        [] => String::new(),
                        other => panic!("unexpected content {other:?}"),
                    },
                ),
                other => panic!("not a tool result: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn runs_each_tool_in_order_and_sends_the_assistant_turn_back_unchanged() {
        let thinking = ContentBlock::Thinking(ThinkingBlock {
            thinking: "I should add.".into(),
            signature: "c2lnbmF0dXJl\u{0}\u{7f}".into(),
        });
        let first = vec![
            thinking.clone(),
            ContentBlock::text("Adding."),
            tool_use("t1", "add", r#"{"a":2,"b":40}"#),
            tool_use("t2", "add", r#"{"a":-1,"b":1}"#),
        ];
        let mut model = Scripted::new(vec![
            Ok(answer(StopReason::ToolUse, first, usage(10, 5))),
            Ok(answer(
                StopReason::EndTurn,
                vec![ContentBlock::text("42 and 0")],
                usage(20, 3),
            )),
        ]);
        let run = Request::new()
            .user("sum")
            .tools(vec![add()])
            .run_tools_with(5, |r| model.send(r))
            .expect("the loop succeeds");
        assert_eq!(run.text(), "42 and 0");
        assert_eq!(
            (run.turns, run.tool_calls, run.max_turns_reached),
            (2, 2, false)
        );
        assert_eq!(run.usage.input_tokens, 30);
        assert_eq!(run.usage.output_tokens, 8);
        assert_eq!(run.turn_usage.len(), 2);
        assert_eq!(run.thinking().collect::<Vec<_>>(), ["I should add."]);

        let second = &model.sent[1].messages;
        assert_eq!(second.len(), 3, "user, assistant, tool results");
        assert!(matches!(second[1].role, Role::Assistant));
        match &second[1].content[0] {
            ContentBlock::Thinking(t) => assert_eq!(t.signature, "c2lnbmF0dXJl\u{0}\u{7f}"),
            other => panic!("thinking first, got {other:?}"),
        }
        assert_eq!(second[1].content.len(), 4);
        assert_eq!(
            results(&second[2]),
            [
                ("t1".to_owned(), false, "42".to_owned()),
                ("t2".to_owned(), false, "0".to_owned())
            ]
        );
        assert_eq!(
            run.messages.len(),
            4,
            "the final answer ends the conversation"
        );
    }

    #[test]
    fn unknown_tools_and_bad_inputs_are_error_results_and_the_loop_goes_on() {
        let mut model = Scripted::new(vec![
            Ok(answer(
                StopReason::ToolUse,
                vec![
                    tool_use("t1", "subtract", "{}"),
                    tool_use("t2", "add", r#"{"a":"two"}"#),
                    tool_use("t3", "fail", "{}"),
                ],
                usage(1, 1),
            )),
            Ok(answer(
                StopReason::EndTurn,
                vec![ContentBlock::text("sorry")],
                usage(1, 1),
            )),
        ]);
        let fail = Tool::raw("fail", "", r#"{"type":"object"}"#, |_| Err(String::new()));
        let run = Request::new()
            .user("x")
            .tools(vec![add(), fail])
            .run_tools_with(5, |r| model.send(r))
            .expect("the loop succeeds");
        assert_eq!(run.tool_calls, 3);
        let r = results(&model.sent[1].messages[2]);
        assert!(r.iter().all(|(_, is_error, _)| *is_error), "{r:?}");
        assert!(r[0].2.contains("no tool `subtract`") && r[0].2.contains("`add`, `fail`"));
        assert!(
            r[1].2.contains("does not match the schema of `add`"),
            "{}",
            r[1].2
        );
        assert_eq!(
            r[2].2, "the tool failed",
            "an empty error still says something"
        );
    }

    #[test]
    fn stops_after_max_turns_without_running_the_last_tools() {
        let calls = std::cell::Cell::new(0);
        let count = Tool::raw("count", "", r#"{"type":"object"}"#, |_| {
            calls.set(calls.get() + 1);
            Ok(String::new())
        });
        let asks = || {
            Ok(answer(
                StopReason::ToolUse,
                vec![tool_use("t", "count", "{}")],
                usage(1, 1),
            ))
        };
        let mut model = Scripted::new(vec![asks(), asks(), asks()]);
        let run = Request::new()
            .user("x")
            .tool(count)
            .run_tools_with(2, |r| model.send(r))
            .expect("the loop succeeds");
        assert!(run.max_turns_reached);
        assert!(run.response.wants_tools());
        assert_eq!((run.turns, run.tool_calls, calls.get()), (2, 1, 1));
        assert_eq!(model.sent.len(), 2);
        assert!(matches!(
            run.messages.last().map(|m| &m.role),
            Some(Role::Assistant)
        ));
        // An empty output is an empty result, not an error.
        let (_, is_error, text) = &results(&model.sent[1].messages[2])[0];
        assert!(!is_error && text.is_empty(), "{is_error} {text:?}");
    }

    #[test]
    fn a_failed_call_keeps_what_the_loop_did_before() {
        let mut model = Scripted::new(vec![
            Ok(answer(
                StopReason::ToolUse,
                vec![tool_use("t", "add", r#"{"a":1,"b":1}"#)],
                usage(7, 2),
            )),
            Err(LlmError::Denied("model calls: at most 50 per run".into())),
        ]);
        let err = Request::new()
            .user("x")
            .tool(add())
            .run_tools_with(u32::MAX, |r| model.send(r))
            .unwrap_err();
        assert!(matches!(err.error, LlmError::Denied(_)));
        assert_eq!(
            (err.turns, err.tool_calls, err.usage().input_tokens),
            (1, 1, 7)
        );
        assert_eq!(err.messages.len(), 3);
        assert!(matches!(
            crate::AgentError::from(err),
            crate::AgentError::Llm(LlmError::Denied(_))
        ));
    }

    #[test]
    fn a_tool_that_borrows_nothing_joins_tools_that_borrow() {
        fn shared() -> Vec<Tool<'static>> {
            vec![add()]
        }
        let mut log = Vec::new();
        let local = Tool::raw("log", "", "{}", |v| {
            log.push(v);
            Ok(String::new())
        });
        let request = Request::new().tool(local).tools(shared());
        assert_eq!(request.as_wit().tools.len(), 2);
    }

    #[test]
    fn a_handler_that_calls_its_own_tool_gets_an_error() {
        let slot: std::rc::Rc<RefCell<Option<Tool<'static>>>> = Default::default();
        let inner = slot.clone();
        let tool = Tool::raw("again", "", "{}", move |_| {
            let me = inner.borrow().clone().expect("set");
            me.call("{}")
        });
        *slot.borrow_mut() = Some(tool.clone());
        let err = tool.call("{}").unwrap_err();
        assert!(err.contains("already running"), "{err}");
        slot.borrow_mut().take();
    }

    #[test]
    fn zero_turns_makes_no_call() {
        let mut model = Scripted::new(vec![]);
        let err = Request::new()
            .user("x")
            .run_tools_with(0, |r| model.send(r))
            .unwrap_err();
        assert!(matches!(err.error, LlmError::InvalidRequest(_)));
        assert!(model.sent.is_empty());
    }

    #[test]
    fn a_handler_may_borrow_the_agents_state() {
        let mut seen = Vec::new();
        let mut model = Scripted::new(vec![
            Ok(answer(
                StopReason::ToolUse,
                vec![tool_use("t", "add", r#"{"a":1,"b":2}"#)],
                usage(1, 1),
            )),
            Ok(answer(
                StopReason::EndTurn,
                vec![ContentBlock::text("3")],
                usage(1, 1),
            )),
        ]);
        let record = Tool::new::<Add>("add", "", |x| {
            seen.push(x.a + x.b);
            Ok("ok".into())
        });
        Request::new()
            .user("x")
            .tool(record)
            .run_tools_with(3, |r| model.send(r))
            .expect("the loop succeeds");
        assert_eq!(seen, [3]);
    }
}
