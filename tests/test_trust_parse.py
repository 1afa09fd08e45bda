"""Model expressions are parsed, never evaluated: every expression the project
ships parses to the same term Python would build, and hostile expressions (in a
config, a checkpoint or on the command line) are a ConfigError that quotes the
piece, with nothing executed."""
import glob
import os
import re

import pytest
import torch

from operad import ops
from operad.experiments.cli import DEMO_EXPR, main
from operad.experiments.config import Config, ConfigError, expand_runs, load_config
from operad.experiments.expr import ExprError, parse_expr
from operad.experiments.train import build_model, load_run_model, save_checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _shipped_expressions():
    """Every model_expr in experiments/configs/*.toml, the demo, the expressions of the
    READMEs and tests, and the README's ResNet written as one expression."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.toml"))):
        raw = load_config(path)
        for profile in ("cpu", "gpu"):
            out += [c.model_expr for c in expand_runs(raw, profile=profile) if c.model_expr]
    for path in (os.path.join(ROOT, "README.md"), os.path.join(ROOT, "experiments", "README.md")):
        text = open(path).read()
        out += [e for e in re.findall(r'"(ops\.[^"]+)"', text) if "..." not in e]  # not placeholders
    out += [DEMO_EXPR,
            "ops.conv(8) >> ops.bn() >> ops.relu() >> ops.global_pool() >> ops.linear(10)",
            "ops.conv(8, padding_mode='circular') >> ops.relu()",
            "ops.conv(8) >> ops.bn() >> ops.relu() >> ops.conv(num_classes, k=1)",
            "ops.conv(16) >> ops.bn() >> ops.relu() >> ops.dropout(0.2) >> ops.global_pool() >> ops.linear(10)",
            # the README's network, inlined
            "((ops.conv(16, bias=False) >> ops.bn() >> ops.relu()).named('stem') >> "
            "(ops.residual(ops.conv(16, bias=False) >> ops.bn() >> ops.relu() >> ops.conv(16, bias=False) >> ops.bn())"
            " >> ops.relu()) * 3 >> ops.global_pool() >> ops.linear(10))",
            "ops.conv(8) + ops.conv(8, k=1) >> ops.relu()",
            "2 * ops.residual(ops.conv(3)) >> ops.concat(ops.conv(4), ops.conv(4, k=1))",
            "ops.harmonic_conv(4, orders=(0, 1)) >> ops.modulus()",
            "ops.rearrange('b (g c) h w -> b (c g) h w', g=2)",
            ]
    return sorted(set(out))


SHIPPED = _shipped_expressions()


def test_found_the_shipped_expressions():
    assert len(SHIPPED) >= 10 and DEMO_EXPR in SHIPPED
    assert any("max_pool(3, stride=2, padding=1)" in e for e in SHIPPED)  # the config's multi-line one


@pytest.mark.parametrize("expr", SHIPPED)
def test_shipped_expression_parses_to_the_python_term(expr):
    # the reference: Python's own evaluation of a trusted, known string (test only)
    want = eval("(" + expr.strip() + ")", {"__builtins__": {}}, {"ops": ops, "num_classes": 10})  # noqa: S307
    got = parse_expr(expr, num_classes=10)
    assert got == want and repr(got) == repr(want)


def test_build_model_uses_the_parser():
    m = build_model(Config(model_expr="ops.conv(4) >> ops.global_pool() >> ops.linear(num_classes)"), 7)
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 7)
    with pytest.raises(ConfigError, match=r"'ops\.conv\.__globals__' at line 1, column 0"):
        build_model(Config(model_expr="ops.conv.__globals__"), 10)


def _hostile(marker):
    m = str(marker)
    return [
        f"ops.conv.__globals__['__builtins__']['__import__']('os').system('touch {m}')",
        f"__import__('os').system('touch {m}')",
        f"ops.conv(8).__class__.__init__.__globals__['os'].system('touch {m}')",
        f"getattr(ops, 'conv')(8) >> open('{m}', 'w')",
        f"(lambda: open('{m}', 'w'))()",
        f"ops.conv(8) >> [open('{m}', 'w') for _ in (1,)][0]",
        f"ops.conv(open('{m}', 'w'))",
        f"ops.conv(8, **{{'k': open('{m}', 'w')}})",
        f"ops.conv(*[open('{m}', 'w')])",
        f"ops.conv(f\"{{open('{m}', 'w')}}\")",
        f"ops.relu() if open('{m}', 'w') else ops.relu()",
        f"ops.conv(8).named(open('{m}', 'w').name)",
        f"ops.conv(8)[open('{m}', 'w')]",
        f"(x := open('{m}', 'w'))",
        f"ops.conv(8) >> ops.__dict__['conv'](open('{m}', 'w'))",
        f"ops._OPS['conv'](8) >> ops.relu()",
        f"ops.__getattr__('{m}')",
        f"ops.conv(8).bind.__globals__",
        f"ops.conv(ops.conv.__code__)",
        f"ops.conv(__builtins__)",
        f"ops.conv(8, __class__=1)",
        f"ops.conv(8) >> {{open('{m}', 'w')}}",
        f"ops.conv(8) >> not open('{m}', 'w')",
        f"ops.conv(8) ** open('{m}', 'w')",
        f"ops.conv(8) >> ops.relu() and open('{m}', 'w')",
        f"ops.conv(b'{m}')",
        f"ops.conv(...)",
        f"'x' * 10 ** 10",
        f"'x' * 99999999999",
        "ops.conv(8) >> ops.relu(\n) >> ops.conv.__globals__",
    ]


def test_hostile_expressions_raise_and_execute_nothing(tmp_path):
    marker = tmp_path / "pwned"
    for expr in _hostile(marker):
        with pytest.raises(ConfigError) as e:
            parse_expr(expr, num_classes=10)
        assert not marker.exists(), expr
        msg = str(e.value)
        assert re.search(r"line \d+, column \d+", msg), msg
        assert isinstance(e.value, ExprError) and e.value.piece and repr(e.value.piece) in msg, msg


@pytest.mark.parametrize("expr, piece, line, col, reason", [
    ("ops.conv(8) >> ops.conv.__globals__", "ops.conv.__globals__", 1, 15, "may follow a dot"),
    ("ops.conv(8) >> ops.relu()[0]", "ops.relu()[0]", 1, 15, "subscripts"),
    ("ops.conv(8) >> (lambda: 1)", "lambda: 1", 1, 16, "lambdas"),
    ("ops.conv(classes)", "classes", 1, 9, "name 'classes'"),
    ("ops.conv(8)\n>> ops.convv(8)", "ops.convv", 2, 3, "did you mean ops.conv"),
    ("ops.conv(8) >> ops.relu", "ops.relu", 1, 15, r"call it: ops\.relu\(\.\.\.\)"),
    ("ops.conv(8) >> ops.rleu", "ops.rleu", 1, 15, r"no operator 'rleu' \(did you mean ops\.relu"),
    ("ops.conv('é') >> ops.__class__", "ops.__class__", 1, 17, "no operator '__class__'"),
    ("ops.conv(8) - ops.relu()", "ops.conv(8) - ops.relu()", 1, 0, "operator Sub"),
    ("ops.conv(8).named(1)", "ops.conv(8).named(1)", 1, 0, "one string"),
    ("ops.conv(8) * 'a'", "ops.conv(8) * 'a'", 1, 0, "positive int"),
    ("ops.conv(8) >> 3", "ops.conv(8) >> 3", 1, 0, "joins two terms"),
    ("ops.conv(8) >> ops.conv(8, kk=3)", "ops.conv(8, kk=3)", 1, 15, "TypeError.*kk"),
])
def test_errors_quote_piece_line_and_column(expr, piece, line, col, reason):
    with pytest.raises(ExprError, match=reason) as e:
        parse_expr(expr, num_classes=10, source="model_expr")
    assert (e.value.piece, e.value.line, e.value.col) == (piece, line, col)
    assert str(e.value).startswith(f"model_expr: {piece!r} at line {line}, column {col}")


def test_syntax_errors_point_into_the_text():
    with pytest.raises(ExprError, match=r"invalid syntax .* at line 2, column 3: '>> ops.relu\(\)'"):
        parse_expr("ops.conv(8)\n>> >> ops.relu()")
    with pytest.raises(ExprError, match=r"never closed.*line 1, column 8"):
        parse_expr("ops.conv(8")
    for bad in ("", "   ", None, 3):
        with pytest.raises(ConfigError):
            parse_expr(bad)


def test_literals_and_num_classes():
    assert parse_expr("ops.linear(num_classes)", num_classes=5) == ops.linear(5)
    assert parse_expr("ops.harmonic_conv(4, orders=[0, -1]) >> ops.dropout(p=+0.2)") == \
        ops.harmonic_conv(4, orders=[0, -1]) >> ops.dropout(0.2)
    with pytest.raises(ExprError, match="num_classes is not known here"):
        parse_expr("ops.linear(num_classes)")
    # parses are cached: the second call does not re-parse
    from operad.experiments import expr as E

    E._compile.cache_clear()
    parse_expr(DEMO_EXPR)
    parse_expr(DEMO_EXPR)
    assert E._compile.cache_info().hits >= 1


@pytest.mark.parametrize("limit", [1000, 2000])  # Python's default, and what torch.compile raises it to
def test_long_chains_parse_and_absurd_nesting_is_a_clear_error(limit):
    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        expr = " >> ".join(["ops.relu()"] * 400)  # a deep network written as one chain
        assert len(parse_expr(expr).items) == 400
        with pytest.raises(ExprError, match="cannot parse the expression"):
            parse_expr(" >> ".join(["ops.relu()"] * 5000))
    finally:
        sys.setrecursionlimit(old)


def test_checkpoint_with_hostile_expression_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    good = build_model(Config(model_expr="ops.conv(4) >> ops.global_pool() >> ops.linear(10)"), 10)
    cfg = Config(model_expr=f"ops.conv.__globals__['__builtins__']['__import__']('os').system('touch {marker}')")
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(str(run / "final.pt"), {"config": cfg.to_dict(),
                                            "model": good.state_dict(), "ema": None, "classes": None})
    with pytest.raises(Exception) as e:
        load_run_model(str(run))
    assert not marker.exists(), "the checkpoint ran code"
    assert isinstance(e.value, ConfigError) and re.search(r"__globals__.*line 1, column 0", str(e.value))


def test_cli_summary_and_verify_refuse_hostile_expressions(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for verb in ("summary", "verify"):
        rc = main([verb, f"ops.conv(8) >> ops.conv.__globals__['__builtins__']['__import__']('os')"
                         f".system('touch {marker}')"])
        assert not marker.exists(), "the command line ran code"
        assert rc == 2
        assert "__globals__" in capsys.readouterr().err


def test_fuzzed_expressions_give_a_term_or_a_config_error(tmp_path):
    """Seeded fuzz: token soups with hostile pieces, and shipped expressions with
    characters deleted, doubled or swapped. Each must parse to a term or raise a
    ConfigError (never another exception), and nothing may run."""
    import numpy as np

    from operad.operators.algebra.term import Term

    marker = tmp_path / "pwned"
    tokens = ["ops", ".", "conv", "relu", "bn", "global_pool", "linear", "residual", "named", "__globals__",
              "__class__", "__import__", "(", ")", "[", "]", ",", ">>", "*", "+", "-", "**", "8", "16", "0", "-1",
              "2.5", "'stem'", "num_classes", "k", "=", "lambda", ":", "if", "else", "for", "in", "{", "}", "\n",
              f"open({str(marker)!r}, 'w')", f"__import__('os').system('touch {marker}')", "getattr", "x"]
    rng = np.random.default_rng(14)
    cases = [" ".join(rng.choice(tokens, size=int(rng.integers(1, 14)))) for _ in range(1500)]
    for expr in SHIPPED[:8]:
        for _ in range(60):
            chars = list(expr)
            i = int(rng.integers(len(chars)))
            op = rng.integers(3)
            if op == 0:
                del chars[i]
            elif op == 1:
                chars.insert(i, chars[i])
            else:
                j = int(rng.integers(len(chars)))
                chars[i], chars[j] = chars[j], chars[i]
            cases.append("".join(chars))
    outcomes = {"term": 0, "ConfigError": 0}
    for expr in cases:
        try:
            got = parse_expr(expr, num_classes=10)
        except ConfigError:
            outcomes["ConfigError"] += 1
        else:
            assert isinstance(got, Term), expr
            outcomes["term"] += 1
        assert not marker.exists(), expr
    print(f"\n{len(cases)} fuzzed expressions: {outcomes}")
    assert outcomes["term"] > 0 and outcomes["ConfigError"] > 0, outcomes
