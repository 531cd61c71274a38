//! The session hooks: which shapes are accepted, what each becomes, and each
//! refusal by its message. (`compile_fail` doc tests in lib.rs check that a
//! refusal stops the build.)

use proc_macro2::TokenStream;
use quote::quote;

use crate::expand::generate;

fn args() -> TokenStream {
    quote!(name = "room", version = "1.0.0", layout = 1)
}

fn accepted(item: TokenStream) -> String {
    let block = syn::parse2(item).expect("the test's impl block parses");
    generate(args(), &block).unwrap_or_else(|error| panic!("refused: {error}")).to_string()
}

fn refusal(item: TokenStream) -> String {
    let block = syn::parse2(item).expect("the test's impl block parses");
    match generate(args(), &block) {
        Ok(tokens) => panic!("accepted, generating {tokens}"),
        Err(error) => error.into_iter().map(|error| error.to_string()).collect::<Vec<_>>().join("\n"),
    }
}

#[test]
fn hooks_are_never_methods_whatever_their_visibility() {
    let generated = accepted(quote!(impl Room {
        pub fn on_join(&mut self, session: Session) {}
        fn on_message(&mut self, session: Session, message: &[u8]) {}
        pub fn on_leave(&mut self, session: Session) {}
        pub fn on_tick(&mut self) {}
        pub fn say(&mut self) {}
    }));
    for hook in ["on_join", "on_message", "on_leave", "on_tick"] {
        assert!(!generated.contains(&format!("\"{hook}\"")), "{hook} is callable: {generated}");
        assert!(generated.contains(&format!("fn {hook} (")), "{hook} is not a hook: {generated}");
    }
    assert!(generated.contains(r#"Method :: new ("say")"#), "{generated}");
    // The list an unknown method's refusal gives.
    assert!(generated.contains(r#"& ["say"]"#), "{generated}");
}

#[test]
fn a_block_without_hooks_keeps_the_traits_defaults() {
    let generated = accepted(quote!(impl Room { pub fn say(&mut self) {} }));
    for hook in ["on_join", "on_message", "on_leave", "on_tick"] {
        assert!(!generated.contains(&format!("fn {hook}")), "{generated}");
    }
}

#[test]
fn the_request_and_the_message_are_raw_text_or_decoded_by_their_type() {
    let raw = accepted(quote!(impl Room {
        fn on_join(&mut self, session: Session, request: &[u8]) {}
        fn on_message(&mut self, ctx: &mut Context, session: Session, message: &'static [u8]) {}
    }));
    assert!(!raw.contains("hook_text") && !raw.contains("decode_"), "{raw}");

    let text = accepted(quote!(impl Room {
        fn on_join(&mut self, session: Session, request: &str) {}
        fn on_message<'a>(&mut self, session: Session, message: &'a str) {}
    }));
    assert!(text.contains(r#"hook_text ("on_join" , "request" , request)"#), "{text}");
    assert!(text.contains(r#"hook_text ("on_message" , "message" , message)"#), "{text}");

    let decoded = accepted(quote!(impl Room {
        fn on_join(&mut self, session: Session, request: Join) {}
        fn on_message(&mut self, session: Session, message: Vec<String>) {}
    }));
    assert!(decoded.contains("decode_join_request :: < Join > (request)"), "{decoded}");
    assert!(decoded.contains("decode_message :: < Vec < String > > (message)"), "{decoded}");
}

#[test]
fn the_context_is_passed_only_to_hooks_that_take_it() {
    let generated = accepted(quote!(impl Room {
        fn on_join(&mut self, ctx: &mut Context, session: Session) {}
        fn on_tick(&mut self) {}
    }));
    assert!(generated.contains("Self :: on_join (self , ctx , session)"), "{generated}");
    assert!(generated.contains("Self :: on_tick (self)"), "{generated}");
}

#[test]
fn results_refuse_and_a_leave_error_is_logged() {
    let generated = accepted(quote!(impl Room {
        fn on_join(&mut self, session: Session) -> Result<(), String> { Ok(()) }
        fn on_tick(&self) -> Result<(), ModuleError> { Ok(()) }
        fn on_leave(&mut self, session: Session) -> Result<(), String> { Ok(()) }
    }));
    assert!(generated.contains("hook_result (Self :: on_join (self , session))"), "{generated}");
    assert!(generated.contains("hook_result (Self :: on_tick (self))"), "{generated}");
    assert!(generated.contains("leave_result (ctx , result)"), "{generated}");
}

#[test]
fn a_hook_without_the_session_is_refused() {
    let message = refusal(quote!(impl Room { fn on_join(&mut self) {} }));
    assert!(message.starts_with("`on_join` takes the session, as `session: Session`"), "{message}");
    assert!(
        message.contains("write `fn on_join(&mut self, ctx: &mut Context, session: Session"),
        "{message}"
    );
    let message = refusal(quote!(impl Room { fn on_leave(&mut self, ctx: &mut Context, who: u64) {} }));
    assert!(message.starts_with("`on_leave` takes the session here"), "{message}");
}

#[test]
fn a_message_hook_without_the_message_is_refused() {
    let message = refusal(quote!(impl Room { fn on_message(&mut self, session: Session) {} }));
    assert!(message.starts_with("`on_message` takes the message after the session"), "{message}");
}

#[test]
fn extra_arguments_are_refused() {
    let message = refusal(quote!(impl Room { fn on_message(&mut self, s: Session, m: &[u8], more: u8) {} }));
    assert!(message.starts_with("`on_message` takes nothing after the message"), "{message}");
    let message = refusal(quote!(impl Room { fn on_leave(&mut self, s: Session, why: String) {} }));
    assert!(message.starts_with("`on_leave` takes nothing after the session"), "{message}");
    let message = refusal(quote!(impl Room { fn on_tick(&mut self, ctx: &mut Context, n: u64) {} }));
    assert!(message.starts_with("`on_tick` takes nothing but the context"), "{message}");
}

#[test]
fn the_context_comes_first_as_a_mutable_reference() {
    let message = refusal(quote!(impl Room { fn on_join(&mut self, s: Session, ctx: &mut Context) {} }));
    assert!(message.starts_with("`on_join` takes the context first"), "{message}");
    let message = refusal(quote!(impl Room { fn on_tick(&mut self, ctx: &Context) {} }));
    assert!(message.starts_with("`on_tick` takes the context as `ctx: &mut Context`"), "{message}");
}

#[test]
fn a_hook_that_returns_a_value_is_refused() {
    let message = refusal(quote!(impl Room { fn on_tick(&mut self) -> u64 { 0 } }));
    assert!(message.starts_with("`on_tick` has no reply to give"), "{message}");
}

#[test]
fn hooks_by_value_without_self_async_unsafe_or_generic_are_refused() {
    for (item, expected) in [
        (quote!(impl Room { fn on_tick(self) {} }), "`on_tick` takes `&mut self` or `&self`"),
        (quote!(impl Room { fn on_tick() {} }), "`on_tick` takes `&mut self` (or `&self`)"),
        (quote!(impl Room { async fn on_tick(&mut self) {} }), "`on_tick` cannot be async"),
        (quote!(impl Room { unsafe fn on_tick(&mut self) {} }), "`on_tick` cannot be `unsafe`"),
        (
            quote!(impl Room { fn on_message<M>(&mut self, s: Session, m: M) {} }),
            "`on_message` cannot be generic",
        ),
    ] {
        let message = refusal(item);
        assert!(message.starts_with(expected), "{message}");
        assert!(message.contains("is a session hook: write `fn "), "{message}");
    }
}
