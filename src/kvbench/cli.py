"""kvbench's command line: parse, call one function, print. Nothing imports this module.

Exit codes: 0 ok, 1 run finished with failed cells or the environment failed (an unwritable or
full output directory, an unreachable API server: one line, results so far kept, `--resume`
finishes), 2 bad input (the message names the field, flag or file), 130 interrupted (SIGINT),
143 terminated (SIGTERM, handled exactly like SIGINT: the running cell is marked interrupted and
its rows so far are flushed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from kvbench.errors import EnvironmentFailure, UserError, one_line
from kvbench.termination import SIGINT_EXIT, SIGTERM_EXIT, TerminationAsInterrupt

_ClickException: Any  # click's usage-error class, wherever this typer keeps it
try:  # typer >= 0.29 vendors click
    from typer._click.exceptions import ClickException as _VendoredClickException

    _ClickException = _VendoredClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click import ClickException as _PlainClickException

    _ClickException = _PlainClickException

app = typer.Typer(
    name="kvbench",
    help="Evaluate KV-cache offload and cache-aware routing for vLLM / llm-d, end to end.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
import_app = typer.Typer(
    help="Import results of other tools into a kvbench run directory.", no_args_is_help=True
)
emulate_app = typer.Typer(
    help="Run the emulated serving stack (no GPU needed).", no_args_is_help=True
)
app.add_typer(import_app, name="import")
app.add_typer(emulate_app, name="emulate")

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command()
def quickstart(
    out: Path | None = typer.Option(
        None, "--out", help="Run directory [default: ./kvbench-runs/quickstart-<UTC time>]"
    ),
    live: bool = typer.Option(
        False,
        "--live",
        help="Run on the real-time emulated stack (processes over HTTP and ZMQ) instead of the "
        "simulated one",
    ),
) -> None:
    """Run the bundled quickstart experiment (simulated stack, 3 repeats x 3 levels), then its report."""
    from kvbench.experiment.quickstart import run_quickstart

    raise typer.Exit(run_quickstart(out, live=live))


@app.command()
def run(
    spec: Path = typer.Argument(
        ...,
        help="Experiment spec (YAML), or the name of a bundled experiment (e.g. quickstart); "
        "fields: `kvbench spec --reference`",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Run directory [default: the spec's output_dir, else ./kvbench-runs/<name>-<UTC time>]",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Finish only the cells missing in --out; finished cells are kept [default: off]",
    ),
    only: list[str] = typer.Option(
        [],
        "--only",
        help="Restrict the matrix, repeatable: KEY=VALUE with KEY model, scenario, level or "
        "repeat [default: every cell]",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the cells, the estimated duration and each engine's full settings "
        "(command line, environment, router config; k8s: the manifests); start nothing "
        "[default: off]",
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        help="Run on another target kind where the spec's target fields carry over "
        "(simulated <-> emulated) [default: the spec's target.kind]",
    ),
    no_report: bool = typer.Option(
        False,
        "--no-report",
        help="Do not build the report at the end (build it later: kvbench report RUN_DIR) "
        "[default: the report is built and its path printed]",
    ),
) -> None:
    """Run an experiment: every cell of models x scenarios x levels x repeats, then its report.

    Prints each cell as [i/N] with its rates and the ETA; results are written as the run goes."""
    from kvbench.experiment.runner import run_experiment_cli

    raise typer.Exit(
        run_experiment_cli(
            spec,
            out,
            resume=resume,
            only=only,
            dry_run=dry_run,
            target_kind=target,
            report=not no_report,
        )
    )


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A kvbench run directory (holds manifest.json)"),
    format: str = typer.Option(
        "md,csv,png,html,json",
        "--format",
        help="Comma-separated outputs: md (REPORT.md), csv (tables), png (figures), html "
        "(REPORT.html, self-contained), json (summary.json), br (Benchmark Report v0.2 per cell)",
    ),
) -> None:
    """(Re)build the report of a run into RUN_DIR/report and print where it is."""
    from kvbench.report.build import build_report

    formats = [part.strip() for part in format.split(",") if part.strip()]
    report_dir = build_report(run_dir, formats)
    typer.echo(f"report: {report_dir}")
    for name in ("REPORT.md", "REPORT.html", "summary.json"):
        if (report_dir / name).is_file():
            typer.echo(f"  {report_dir / name}")


@app.command("spec")
def spec_reference(
    reference: bool = typer.Option(
        False,
        "--reference",
        help="Print the reference of every experiment-spec field (types, units, defaults, an "
        "example per workload kind) as Markdown, as in docs/spec.md [default: off]",
    ),
    summary: bool = typer.Option(
        False,
        "--summary-reference",
        help="Print the field-by-field reference of report/summary.json, as in "
        "docs/summary-json.md [default: off]",
    ),
) -> None:
    """References generated from kvbench's own models, so they cannot drift from the code."""
    from kvbench.spec.reference import spec_reference_markdown, summary_reference_markdown

    if not reference and not summary:
        raise typer.BadParameter("give --reference or --summary-reference", param_hint="spec")
    typer.echo(spec_reference_markdown() if reference else summary_reference_markdown(), nl=False)


@app.command()
def calibrate(
    out: Path = typer.Option(..., "--out", help="Hardware profile YAML to write"),
    url: list[str] = typer.Option([], "--url", help="A running vLLM server to probe (repeatable)"),
    spec: Path | None = typer.Option(None, "--spec", help="A spec with a vllm target to start"),
    probe: list[Path] = typer.Option([], "--probe", help="Probe files to fit (JSON lines)"),
    base: str = typer.Option("H200", "--base", help="Hardware profile whose rates are kept"),
    name: str | None = typer.Option(None, "--name", help="Name of the written profile"),
    quick: bool = typer.Option(False, "--quick", help="Fewer operating points"),
) -> None:
    """Probe real vLLM, fit the emulator's cost model, write a hardware profile (`hardware: PATH`)."""
    from kvbench.calibrate.command import run_calibrate

    report = run_calibrate(out, list(url), spec, list(probe), base, name, quick)
    errors = ", ".join(f"{k} {v:.1%}" for k, v in report.errors.items())
    typer.echo(f"profile: {out} (fit error: {errors})")


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="A kvbench run directory (e.g. real vLLM)"),
    run_b: Path = typer.Argument(..., help="Another run directory (e.g. emulated)"),
    out: Path | None = typer.Option(None, "--out", help="Directory for compare.md/.csv/.png"),
) -> None:
    """The same cells of two runs side by side, with per-metric differences."""
    from kvbench.compare import write_comparison

    report_dir = write_comparison(run_a, run_b, out)
    typer.echo((report_dir / "compare.md").read_text())
    typer.echo(f"compare: {report_dir}")


@import_app.command("guidellm")
def import_guidellm_cmd(
    files: list[str] = typer.Argument(
        ...,
        help="GuideLLM result JSON files; SCENARIO=FILE labels a file's "
        "configuration (e.g. no-offload=a.json native-offload=b.json)",
    ),
    out: Path = typer.Option(..., "--out", help="Run directory to create (required)"),
) -> None:
    """Turn GuideLLM result JSON into a kvbench run directory."""
    from kvbench.results.guidellm_import import import_guidellm

    run_dir = import_guidellm(files, out)
    typer.echo(f"imported: {run_dir}")


@emulate_app.command("serve", context_settings=_PASSTHROUGH)
def emulate_serve(ctx: typer.Context) -> None:
    """One emulated vLLM engine: `kvbench emulate serve MODEL [vllm serve flags] [--hardware H]`
    (default hardware: H100-SXM; `kvbench emulate serve --help` lists every flag and default)."""
    from kvbench.emulator.api.serve import main as serve_main

    raise typer.Exit(serve_main(list(ctx.args)))


@emulate_app.command("router", context_settings=_PASSTHROUGH)
def emulate_router(ctx: typer.Context) -> None:
    """The emulated llm-d endpoint picker: `--config EPP.yaml --endpoint URL [--endpoint URL ...]`
    (`kvbench emulate router --help` lists every flag and default)."""
    from kvbench.emulator.router.serve import main as router_main

    raise typer.Exit(router_main(list(ctx.args)))


@emulate_app.command("stack")
def emulate_stack(
    spec: Path = typer.Argument(
        ..., help="Experiment spec; its first model and scenario are started"
    ),
    scenario: str | None = typer.Option(
        None, "--scenario", help="Scenario to start (default: the spec's first)"
    ),
) -> None:
    """Start a scenario's whole local stack (KV stores, engines, router) and keep it up."""
    from kvbench.emulator.stack import main as stack_main

    raise typer.Exit(stack_main(spec, scenario))


def main(argv: list[str] | None = None) -> int:
    with TerminationAsInterrupt() as termination:
        code = _main(argv)
        if code == SIGINT_EXIT and termination.terminated:
            return SIGTERM_EXIT
        return code


def _main(argv: list[str] | None) -> int:
    try:
        # In non-standalone mode click returns a command's `typer.Exit(code)` instead of raising it.
        code = app(args=argv, prog_name="kvbench", standalone_mode=False)
        if isinstance(code, int):
            return code
    except UserError as err:
        typer.echo(f"kvbench: error: {one_line(str(err))}", err=True)
        return UserError.exit_code
    except EnvironmentFailure as err:
        typer.echo(f"kvbench: error: {one_line(str(err))}", err=True)
        return EnvironmentFailure.exit_code
    except KeyboardInterrupt:
        typer.echo("kvbench: interrupted", err=True)
        return SIGINT_EXIT
    except typer.Exit as done:
        return done.exit_code
    except SystemExit as done:  # argparse in pass-through commands
        return done.code if isinstance(done.code, int) else 2
    except _ClickException as err:  # usage errors come through here in non-standalone mode
        err.show()
        return 2
    except OSError as err:  # the machine, not the input: read-only or full disk, a path in the way
        typer.echo(f"kvbench: error: {one_line(describe_os_error(err))}", err=True)
        return EnvironmentFailure.exit_code
    return 0


def describe_os_error(err: OSError) -> str:
    """One line: what failed, on which path (a read-only directory, a full disk, a file in the way)."""
    where = f"{err.filename}: " if err.filename else ""
    also = f" -> {err.filename2}" if err.filename2 else ""
    reason = err.strerror or str(err) or type(err).__name__
    return f"{where}{reason}{also} (results written so far are kept; fix it and --resume)"


if __name__ == "__main__":
    sys.exit(main())
