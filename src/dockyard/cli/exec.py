"""``dockyard exec TASK -- CMD...``: run a command in a running task (owner or admin).

Without ``-i``/``-t`` the command runs to its end; its output is printed and its
exit code becomes this command's. ``-it`` relays an interactive, resizable
terminal over a WebSocket (the server relays to the agent, the agent to
``docker exec``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from dockyard.cli.app import (
    TokenOpt,
    UrlOpt,
    app,
    call,
    client,
    command_args,
    complete_task,
    fail,
)
from dockyard.client import ClientError


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    task: Annotated[str, typer.Argument(help="Task id or name.", autocompletion=complete_task)],
    command: Annotated[list[str], typer.Argument(help="Command and arguments (after --).")],
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Keep stdin open (relay it).")
    ] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a terminal.")] = False,
    timeout: Annotated[
        float, typer.Option(help="Non-interactive: give up after this many seconds.")
    ] = 60.0,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run a command in a running task and exit with its exit code."""
    args = command_args(command)
    if not args:
        fail("give a command: dockyard exec TASK -- CMD ...")
    with client(url, token) as api:
        if interactive or tty:
            code = _interactive(api, task, args, tty)
        else:
            result = call(api.exec, task, args, timeout)
            sys.stdout.write(result["stdout"])
            sys.stderr.write(result["stderr"])
            if result["truncated"]:
                print("dockyard: output truncated", file=sys.stderr)
            if result["error"]:
                print(f"dockyard: {result['error']}", file=sys.stderr)
            code = result["exit_code"]
    raise typer.Exit(code if isinstance(code, int) else 255)


def _interactive(api: Any, task: str, args: list[str], tty: bool) -> int | None:
    size = shutil.get_terminal_size()
    try:
        with api.exec_socket(task, args, tty=tty, cols=size.columns, rows=size.lines) as ws:
            return _relay(ws, tty)
    except ClientError as exc:
        fail(str(exc))


def _relay(ws: Any, tty: bool) -> int | None:
    raw = tty and sys.stdin.isatty()
    saved: Any = None
    if raw:
        import termios
        import tty as tty_module

        saved = termios.tcgetattr(sys.stdin.fileno())
        tty_module.setraw(sys.stdin.fileno())

        def on_resize(*_: Any) -> None:
            now = shutil.get_terminal_size()
            ws.send(json.dumps({"resize": [now.columns, now.lines]}))

        signal.signal(signal.SIGWINCH, on_resize)

    def pump_stdin() -> None:
        try:
            while data := os.read(sys.stdin.fileno(), 4096):
                ws.send(data)
            ws.send(json.dumps({"eof": True}))
        except Exception:  # the socket closed under us: the command ended
            return

    threading.Thread(target=pump_stdin, daemon=True).start()
    code: int | None = None
    try:
        for message in ws:
            if isinstance(message, bytes):
                sys.stdout.buffer.write(message)
                sys.stdout.flush()
            else:
                end = json.loads(message)
                code = end.get("exit")
                if end.get("error"):
                    print(f"\r\ndockyard: {end['error']}", file=sys.stderr)
                break
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    return code
