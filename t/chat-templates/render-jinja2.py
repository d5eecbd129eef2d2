#!/usr/bin/env python3
"""render-jinja2.py - golden outputs of the chat-template corpus, rendered as
transformers' apply_chat_template(tokenize=False) renders them.

For every t/fixtures/chat-templates/*.jinja and every conversation of
t/fixtures/chat-templates/conversations.json, with add_generation_prompt false
and true, writes one JSON line to t/fixtures/chat-templates/golden/NAME.jsonl:
  {"conversation": C, "add_generation_prompt": B, "output": TEXT}
or, where jinja2 raises,
  {"conversation": C, "add_generation_prompt": B, "error": MESSAGE, "raised": true|false}
("raised" is true for the template's own raise_exception()).

The environment is transformers' (src/transformers/utils/chat_template_utils.py,
_compile_jinja_template): ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[generation tag, jinja2.ext.loopcontrols]),
its tojson filter (json.dumps with ensure_ascii=False), raise_exception and
strftime_now globals.  render() gets messages, tools (None when the
conversation has none), documents=None, add_generation_prompt, the special
tokens of "variables" and enable_thinking where the conversation sets it.

strftime_now reads the clock from GM_JINJA_NOW (seconds since the epoch, UTC)
as git-model's renderer does, so that the goldens are reproducible; this
script sets it to NOW below when it is not set.

It also renders snippets.json (one small template per construct) into
golden/snippets.jsonl: {"name": N, "output": TEXT} or {"name": N, "error": ...}.

Usage: python3 t/chat-templates/render-jinja2.py [TEMPLATE.jinja...]
(needs python3-jinja2 >= 3.1; run from anywhere).  git-model's tests compare
against the committed goldens and do not need Python.
"""
import json
import os
import sys
from datetime import datetime, timezone

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

NOW = 1785067200  # 2026-07-26 12:00:00 UTC

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "chat-templates")


class GenerationTag(Extension):
    """transformers' AssistantTracker: {% generation %}...{% endgeneration %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


class Raised(Exception):
    pass


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    now = int(os.environ.get("GM_JINJA_NOW", NOW))
    return datetime.fromtimestamp(now, timezone.utc).replace(tzinfo=None).strftime(fmt)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render_all(env, path, convs):
    name = os.path.basename(path)[:-len(".jinja")]
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tmpl = env.from_string(source)
    lines = []
    for conv in convs["conversations"]:
        for agp in (False, True):
            kw = dict(convs["variables"])
            if "enable_thinking" in conv:
                kw["enable_thinking"] = conv["enable_thinking"]
            rec = {"conversation": conv["name"], "add_generation_prompt": agp}
            try:
                rec["output"] = tmpl.render(messages=conv["messages"],
                                            tools=convs["tools"] if conv.get("tools") else None,
                                            documents=None, add_generation_prompt=agp, **kw)
            except jinja2.exceptions.TemplateError as e:
                # raise_exception raises TemplateError itself; jinja2's own
                # errors are its subclasses (UndefinedError, SecurityError...).
                rec["error"] = str(e)
                rec["raised"] = type(e) is jinja2.exceptions.TemplateError
            except Exception as e:  # TypeError, ValueError... from Python operations
                rec["error"] = "%s: %s" % (type(e).__name__, e)
                rec["raised"] = False
            lines.append(json.dumps(rec, ensure_ascii=False))
    out = os.path.join(FIXTURES, "golden", name + ".jsonl")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return sum(1 for l in lines if '"error"' in l and '"output"' not in l)


def render_snippets(env):
    """snippets.json: small templates, one per construct, with their contexts."""
    with open(os.path.join(FIXTURES, "snippets.json"), encoding="utf-8") as f:
        spec = json.load(f)
    lines = []
    for sn in spec["snippets"]:
        rec = {"name": sn["name"]}
        try:
            ctx = spec["contexts"][sn["context"]] if "context" in sn else {}
            rec["output"] = env.from_string(sn["template"]).render(**ctx)
        except jinja2.exceptions.TemplateError as e:
            rec["error"] = str(e)
            rec["raised"] = type(e) is jinja2.exceptions.TemplateError
        except Exception as e:
            rec["error"] = "%s: %s" % (type(e).__name__, e)
            rec["raised"] = False
        lines.append(json.dumps(rec, ensure_ascii=False))
    with open(os.path.join(FIXTURES, "golden", "snippets.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main():
    os.environ.setdefault("GM_JINJA_NOW", str(NOW))
    with open(os.path.join(FIXTURES, "conversations.json"), encoding="utf-8") as f:
        convs = json.load(f)
    os.makedirs(os.path.join(FIXTURES, "golden"), exist_ok=True)
    paths = sys.argv[1:] or sorted(os.path.join(FIXTURES, p) for p in os.listdir(FIXTURES) if p.endswith(".jinja"))
    env = environment()
    if not sys.argv[1:]:
        render_snippets(env)
    for p in paths:
        errors = render_all(env, p, convs)
        print("%-60s %d errors" % (os.path.basename(p), errors))


if __name__ == "__main__":
    main()
