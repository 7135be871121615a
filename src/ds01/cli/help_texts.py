"""Every help text of the ds01 commands beyond ``--help``, in one place.

ds01's user commands have four help tiers:

``--help``
    argparse's own page: syntax, the common options, exit codes (at most 25 lines). Its
    text is the command's ``description`` in ``COMMANDS`` (``ds01.cli.main``); options
    named in ``CommandHelp.more`` are left out of it, to keep it short.
``--info``
    the full reference: :attr:`CommandHelp.info`, then *every* option (taken from the
    parser, so it is never out of date), the :attr:`CommandHelp.examples` and the exit codes.
``--concepts``
    the ideas behind the command, for learners: the :data:`CONCEPTS` topics that
    :attr:`CommandHelp.concepts` names. A topic is written once and shared by every
    command that needs it.
``--guided``
    asks :attr:`CommandHelp.questions` one by one, checks each answer, shows the equivalent
    command line and runs it only after a yes (``ds01.cli.guided``).

Format
------
:data:`HELP` maps a command's path under ``ds01``, words joined by a space
(``"container create"``, ``"queue"``), to its :class:`CommandHelp`. :data:`CONCEPTS` maps a
topic key (``"gpus"``) to a :class:`Concept`. Texts are Markdown, kept to what reads well
both as plain text (pipes, ``NO_COLOR``) and rendered by rich on a terminal: paragraphs,
``- `` lists, ``**bold**``, `` `code` `` and fenced code blocks; no headings (the renderer
adds them) and no tables; lines at most 88 characters.

Adding a command
----------------
1. Add its ``Command`` to ``COMMANDS``; its ``description`` is the ``--help`` text.
2. Add ``HELP["noun verb"] = CommandHelp(info=…, examples=…, concepts=…, questions=…)``
   below; name the options that ``--help`` may leave out in ``more``. Reuse a topic of
   :data:`CONCEPTS` or add one.
3. ``tests/unit/test_help_tiers.py`` checks that every user command (all but the admin
   nouns in :data:`ADMIN_NOUNS`) has all four tiers, that the texts are long enough and not
   too long, that questions name real options, and that ``--help`` fits in 25 lines.

This module holds data only: the CLI imports it when one of the tiers is asked for, never at
start-up.
"""

from __future__ import annotations

from ds01.cli import validators

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

#: Nouns of commands for admins only: they need ``--help`` and nothing more.
ADMIN_NOUNS = frozenset({"admin", "audit", "config", "maintenance"})


# Plain classes, not dataclasses: ``--help`` reads this module, and importing
# ``dataclasses`` (with ``inspect``) would double a help page's start-up.


class Concept:
    """One topic of ``--concepts``: a title and a Markdown text for learners."""

    __slots__ = ("text", "title")

    def __init__(self, title: str, text: str) -> None:
        self.title = title
        self.text = text


class Question:
    """One step of ``--guided``.

    Args:
        option: the option it fills (``"--image"``), or the metavar of a positional argument
            (``"NAME"``).
        prompt: what is asked, as a short question.
        default: the answer taken when the user just presses Enter; ``""`` means none.
        validate: checks an answer: returns it as it goes on the command line, or raises
            ``ValueError`` saying what is wrong (``ds01.cli.validators``). The option's own
            argparse type and choices are checked as well.
        choices: the allowed answers; when empty, the parser's ``choices`` of the option, if
            any, are offered.
        choices_from: ask ds01d for the choices: ``"images"``, ``"containers"``,
            ``"mig-profiles"`` or ``"queue"`` (see ``ds01.cli.guided.CHOICE_SOURCES``).
        required: an empty answer is not accepted (unless there is a default).
        yes_no: a yes/no question; a yes adds the option (a flag) to the command line.
        ask_if: asked only when this returns true for the answers so far (option → answer).
        checked_by: ask ds01d whether the answer fits, as soon as it is given (and whether
            the question can be answered at all, before the first question): a key of
            ``ds01.cli.guided.ANSWER_CHECKS``, e.g. ``"new-container"``, ``"gpu-count"``.
    """

    __slots__ = (
        "ask_if",
        "checked_by",
        "choices",
        "choices_from",
        "default",
        "option",
        "prompt",
        "required",
        "validate",
        "yes_no",
    )

    def __init__(
        self,
        option: str,
        prompt: str,
        default: str = "",
        validate: Callable[[str], str] | None = None,
        choices: tuple[str, ...] = (),
        choices_from: str | None = None,
        required: bool = False,
        yes_no: bool = False,
        ask_if: Callable[[Mapping[str, str]], bool] | None = None,
        checked_by: str | None = None,
    ) -> None:
        self.option = option
        self.prompt = prompt
        self.default = default
        self.validate = validate
        self.choices = choices
        self.choices_from = choices_from
        self.required = required
        self.yes_no = yes_no
        self.ask_if = ask_if
        self.checked_by = checked_by


class CommandHelp:
    """The ``--info``, ``--concepts`` and ``--guided`` tiers of one command.

    Args:
        info: what the command does in full: behaviour, defaults, edge cases (Markdown).
        examples: command lines with what each does.
        concepts: keys of :data:`CONCEPTS`, most relevant first.
        questions: the steps of ``--guided``, in order.
        more: options that ``--help`` leaves out (``--info`` lists them).
    """

    __slots__ = ("concepts", "examples", "info", "more", "questions")

    def __init__(
        self,
        info: str,
        examples: tuple[tuple[str, str], ...],
        concepts: tuple[str, ...],
        questions: tuple[Question, ...],
        more: tuple[str, ...] = (),
    ) -> None:
        self.info = info
        self.examples = examples
        self.concepts = concepts
        self.questions = questions
        self.more = more


def _container_question(verb: str) -> Question:
    """The question for the NAME of one of the user's containers, the one to ``verb``."""
    return Question("NAME", f"Container to {verb}", choices_from="containers", required=True)


def _image_name_question() -> Question:
    """The question for the NAME of the user's own image (made or built)."""
    return Question(
        "NAME", "Name of the image (e.g. thesis)", validate=validators.image_name, required=True
    )


def _json_question(what: str) -> Question:
    return Question(
        "--json", f"Print {what} as JSON (for scripts) instead of a table?", "n", yes_no=True
    )


# -- concepts --------------------------------------------------------------------------------

CONCEPTS: dict[str, Concept] = {
    "containers": Concept(
        "Containers",
        """\
A **container** is a private, isolated copy of a Linux system that runs on this server.
It has its own programs and Python packages (from its image), its own processes and its
own share of CPU, memory and GPUs, but it shares the server's kernel, so it starts in
seconds.

Why ds01 uses them: dozens of people share one machine. Containers let each of you
install whatever you need without breaking anyone else's setup, and let ds01 give each
container exactly the GPUs and memory it was granted, and no more.

A container goes through a simple life: **created** (it exists, nothing runs),
**running** (`container-start`), **stopped** (`container-stop`: processes end, files
stay), and **removed** (`container-remove`: it is gone, your `/workspace` files stay).
You never use Docker directly: ds01d, the ds01 daemon, creates containers for you,
checks your quota and records what happened. Your containers are yours only: another
user's `thesis` is a different container from yours.""",
    ),
    "images": Concept(
        "Images",
        """\
An **image** is the template a container is made from: an operating system plus the
software installed in it (Python, PyTorch or TensorFlow, CUDA libraries, JupyterLab).
Every container made from the same image starts with the same software, which is what
makes your work reproducible: a colleague with the same image gets the same
environment.

An image never changes while containers run from it. What you install inside a running
container is lost when the container is removed; what you save in `/workspace` is
kept. To keep software, put it in an image: a project's `Dockerfile` says, step by
step, how its image is built (base image, JupyterLab, data-science packages, your
project's packages).

ds01 lets you use the images of its **registry** (`image-list`), which an admin keeps
on the server: ds01 never downloads images by itself. You name them by their short
name, such as `pytorch-jupyter`. You can also build images of your own
(`image-build`): they are yours alone, and you name them by their tag, such as
`alice/thesis:latest`.""",
    ),
    "image-builds": Concept(
        "Building your own image",
        """\
When the registry's images lack something your work needs, build an image of your own.
`image-create NAME` writes a **Dockerfile**, a recipe, to `~/images/NAME/Dockerfile`,
in four phases that build on each other: a framework base image (PyTorch, TensorFlow
or plain Python), JupyterLab, the data-science packages, and the packages of your use
case. Read it, edit it, then `image-build NAME`.

Docker runs the recipe step by step and keeps the result of each step (its **cache**):
change phase 4 and only phase 4 runs again. Put what changes most often last.

ds01d builds for you, because only it may use Docker. It reads your directory as you,
so nothing you cannot read ends up in an image; it builds only from images you may use
(the registry's, or your own); every step runs with your CPU and memory limits and no
GPU; and it tags the result in your namespace (`alice/thesis:latest`). Only you can
create containers from it (`container-create NAME --image alice/thesis:latest`), and
only you (or an admin) can remove it (`image-remove`). Rebuilding with the same tag
replaces the old image.""",
    ),
    "gpus": Concept(
        "GPUs, MIG slices and GPU-equivalents",
        """\
A **GPU** is the processor that trains and runs neural networks. This server has
several; each container gets its own devices, and no other container can see or use
them.

A big GPU (an A100 or H100) can be cut into **MIG slices** (Multi-Instance GPU):
isolated parts, each with its own compute units and memory. A `3g.20gb` slice has 3 of
the GPU's 7 compute parts and 20 GB of memory; a `1g.5gb` slice has 1 part and 5 GB. A
slice is plenty for a notebook, a small model or debugging, and it leaves the rest of
the GPU to others.

Your quota counts **GPU-equivalents**: a whole GPU is 1.0 and a slice is its share of
the GPU (`3g.20gb` = 3/7 ≈ 0.43). Ask for whole GPUs with `--gpus N` or for a slice with
`--mig PROFILE`; ds01 picks the smallest free slice that fits, so large slices stay free
for large jobs. Every device is named by a UUID (`GPU-…` or `MIG-…`), which
`container-list` and `gpu-status` show; inside the container, `DS01_GPUS` and (where the
GPUs are real) `CUDA_VISIBLE_DEVICES` name exactly those.""",
    ),
    "quotas": Concept(
        "Quotas and limits",
        """\
Everyone gets a fair share of the server, set by the admins in `resource-limits.yaml`:
your own entry, else your group's (for example `phd`), else the defaults. `check-limits`
shows your values and `check-limits --explain` where each one came from.

- `gpu_limit`: GPU-equivalents over all your containers that hold GPUs.
- `max_gpus_per_container`: the most one container may hold.
- `cpu_limit`, `memory_limit`, `shm_size`, `pids_limit`: what each container gets.
- `max_containers`: how many containers you may have, running or not.
- `disk_limit`: disk space for what a container writes outside `/workspace` and `/data`;
  over it the container is warned, then stopped, and does not start again until removed.
- `idle_timeout_hours`, `max_runtime_hours`: how long a container may sit idle or run.

A container gets your full per-container limits unless you ask for less (`--cpus`,
`--memory`). Asking for more than your quota is refused with exit code 3 and a message
that says what is in use; it is never silently trimmed. A program that uses more memory
than its container has is killed by the kernel (an "OOM kill", shown by
`container-list`).""",
    ),
    "queue": Concept(
        "The GPU queue and fair share",
        """\
When every suitable GPU is taken, a request within your quota does not fail: it **waits
in the GPU queue** and starts by itself when its turn comes, even if you close the
terminal. `ds01 queue` shows your waiting requests and their positions; `ds01 queue
cancel ID` withdraws one; `--no-wait` makes a command fail at once (exit 3) instead.

The queue is not first come, first served. Each request has a **score**: your priority,
plus a **fair-share** part that is higher the less GPU time you (and your group) used
recently, plus the time it has waited, which grows without bound so that nobody waits
forever. Highest score first: someone who has not used a GPU all week goes before
someone who used four all week. `ds01 queue --explain` shows each part of the score.

A stopped container keeps its GPUs for a short while (15 minutes by default), then gives
them back to the queue; `container-start` gets devices again.""",
    ),
    "idle": Concept(
        "Idle reclaim, runtime limits and keep-alive",
        """\
GPUs are scarce, so a container that does nothing gives them back. A container is
**idle** while it shows no CPU, GPU or network activity worth the name and no terminal
of yours is open in it (`container-open`). A Jupyter kernel that computes is busy; a
notebook server with nothing running is idle, even with a model loaded in GPU memory.

After `idle_timeout_hours` of idleness (see `check-limits`; shorter while others wait in
the queue) the container is **stopped**. You are warned before, at 80 % and 95 % of the
time, on your terminal and in `/workspace/.ds01-notice`; `container-list` shows how long
each container has been idle, when it will be stopped and why.

- `touch /workspace/.keep-alive` counts as activity, but defers a stop by at most a day
  (`keep_alive_max_hours`), however often you touch it: use it when you will come back
  to a notebook.
- `max_runtime_hours` bounds a container's total running time; after it, re-create the
  container (your `/workspace` is kept).
- A stopped container keeps its files: `container-start` brings it back. When a run
  really needs longer, ask an admin for an exemption.""",
    ),
    "ports": Concept(
        "Ports, Jupyter and TensorBoard",
        """\
Programs such as JupyterLab (port 8888) and TensorBoard (port 6006) listen on a **port**
inside the container. `--port 8888` publishes it on this server's 127.0.0.1, on a free
port that Docker picks (`container-list` shows the mapping, e.g.
`127.0.0.1:49153->8888`); `--port 18888:8888` asks for host port 18888 (1024 or above).

Ports are never opened to the network. From your laptop, forward one through SSH:

```
ssh -L 8888:127.0.0.1:49153 you@server
```

then open http://localhost:8888. Other users of the server can reach 127.0.0.1 too, so
keep Jupyter's token or password on.

Images that serve JupyterLab (the starter image, images from `image-create` and
`project-init`) need no `--port`: ds01 publishes their Jupyter port on a fixed host port
of its own and gives the container a token; `container-list` shows the whole URL.""",
    ),
    "remote": Concept(
        "Working from your laptop: SSH, tunnels, VS Code",
        """You reach this server with **SSH**, using a key pair made on *your laptop*: the private
key never leaves it, and only the public half (`~/.ssh/id_ed25519.pub`) is copied here,
into `~/.ssh/authorized_keys` (`ssh-copy-id you@server` does it, or `user-setup
--add-ssh-key`). Never make a key on the server to copy away: a private key that travels
is a key others may hold.

Programs in your containers (JupyterLab, TensorBoard) listen on the server's 127.0.0.1
only. An **SSH tunnel** brings such a port to your laptop:
`ssh -N -L 8888:127.0.0.1:PORT you@server`, then open http://localhost:8888. The
`LocalForward` line in the
`~/.ssh/config` block that `user-setup` writes does the same on every `ssh ds01`.

**VS Code** with the Remote-SSH extension opens folders on the server through the same
SSH host; for notebooks, give it the JupyterLab URL (with its token) as an existing
Jupyter server.""",
    ),
    "files": Concept(
        "Your files and /workspace",
        """\
Files written inside a container live as long as the container. Files in **/workspace**
live on the server's disk: your `~/workspace` (created if missing) is mounted there, so
they survive stopping, removing and re-creating containers. Keep code, notebooks, data
and checkpoints in `/workspace`.

`--workspace DIR` mounts another directory of yours at `/workspace`, and `--data DIR`
one at `/data` (for example a dataset). Both must be directories you own. The container
runs as your own user, so files you write there are yours, with your permissions. Two
special files: `/workspace/.keep-alive` (touch it to defer an idle stop) and
`/workspace/.ds01-notice` (where ds01 writes its warnings).""",
    ),
    "projects": Concept(
        "Projects and Dockerfiles",
        """\
A **project** is a directory that holds everything about one piece of work: code,
notebooks, configuration, and the recipe of its software environment. `project-init`
lays one out the same way every time (`data/`, `notebooks/`, `scripts/`, `models/`,
`outputs/`, `tests/`), so you and your supervisor always know where things are, and git
tracks its history.

Its **Dockerfile** is the recipe of the project's image, in four phases:

1. a framework base image (PyTorch, TensorFlow or plain Python),
2. JupyterLab, to work in notebooks,
3. the common data-science packages (numpy, pandas, scikit-learn, matplotlib),
4. the packages of the project's use case (computer vision, NLP, …), which its
   `requirements.txt` lists too.

Each phase builds on the last, and Docker keeps the result of each step: adding a
package to phase 4 rebuilds only phase 4. `pyproject.toml` records the project's type,
framework, image name and default GPU request in its `[tool.ds01]` section, for ds01's
commands.""",
    ),
    "events": Concept(
        "The audit log: what ds01 recorded",
        """\
Everything ds01d does is written to an **audit log**, one event per line: who acted,
what they did (an *action* such as `container.create`, `gpu.allocate`, `cleanup.idle`
or `auth.denied`), on what (a *resource*, such as `container/thesis`), with which
details, and whether it succeeded, was refused or failed. Only ds01d writes it, and each
line carries a fingerprint of the one before it, so an admin can tell if anyone edited
or removed lines (`ds01 audit verify`).

`ds01 events` shows you your part of it: what you did, and what ds01d did to your
containers on its own: starting a request that waited in the queue, giving back the GPUs
of a container stopped for a while, stopping an idle one. It answers questions such as
"why was my container stopped?", "when did my queued request start?" or "why was my
command refused?". You never see other users' events; admins see everyone's. Secrets
such as passwords or tokens are never written to the log.""",
    ),
    "observing": Concept(
        "Watching a container: its output and what it uses",
        """\
A container runs programs you do not see: a JupyterLab started by its image, a training
script started in the background. What they print (their **output**: messages, warnings,
errors, the URL Jupyter announces) is kept by the server for each container, even after
it stopped, until the container is removed. `container-logs` shows it: the first place
to look when something did not come up, or stopped, and you do not know why.

What a container **uses** is measured by the kernel: CPU time (shown as a percentage of
one core, so 200 % is two busy cores), memory (compared with your limit: a container
that reaches it has processes killed), the number of processes, and on its GPUs the
utilisation and the GPU memory in use. `container-stats` shows these now. A GPU that
sits at 0 % while your job "runs" usually means the job waits for something or runs on
the CPU; memory close to its limit explains a sudden "Killed".""",
    ),
    "reservations": Concept(
        "Reservations: GPUs at a known time",
        """\
Before a deadline or a course session you may need GPUs at a known time. `ds01 reserve
--gpus 2 --from "2026-12-10 09:00" --hours 8` keeps two GPUs for you over that window
(the server's local time); `--mig 3g.20gb` keeps one MIG slice instead. A reservation
never overlaps another on a device: when the window is taken the command fails with exit
3, names the reservation in the way and suggests the next free slot.

Before the start, other people's containers may still use a reserved GPU, but only when
their runtime limit (`max_runtime_hours`, or `container-create --runtime-hours HOURS`)
ends before the start. Containers still on it are warned a while before (15 minutes by
default) and stopped at the start, their `/workspace` kept. During
the window your containers may use the reserved GPUs on top of your GPU quota.

Limits (see your admin): by default up to your `gpu_limit` GPUs at once, at most 8
hours a reservation and at most 14 days ahead. `ds01 reservations` lists yours, `--all`
everyone's, `ds01 reservations cancel ID` gives one back. Admins reserve GPUs for
maintenance too: then nobody's containers may use them.""",
    ),
    "simulation": Concept(
        "Simulating a queue policy",
        """\
Choosing how a shared server is scheduled is a trade-off: first come, first served is
simple but lets one heavy user hold everyone up; fair share favours those who used less
recently. `ds01 simulate` answers "what would have happened" without touching anyone's
containers: it replays a **workload trace** (who asked for how many GPUs, when, for how
long) on a virtual clock, once under the configured fair-share queue and once under
first come, first served.

It compares the waits, GPU utilisation, GPU-hours lost to idle containers and fairness
per group, so a lab can see the effect of a change before making it. The trace is a CSV
file, one request per line; runs are deterministic, so the same trace gives the same
report.""",
    ),
}


# -- commands --------------------------------------------------------------------------------


def _no_gpus(answers: Mapping[str, str]) -> bool:
    return answers.get("--gpus", "0") == "0"


def _action_is(action: str) -> Callable[[Mapping[str, str]], bool]:
    def check(answers: Mapping[str, str]) -> bool:
        return answers.get("ACTION", "list") == action

    return check


def _when(text: str) -> str:
    """A time as ``ds01 events --since`` takes it (``ValueError`` says the forms)."""
    from datetime import datetime, timezone

    from ds01.core.event_query import parse_when

    parse_when(text, datetime.now(timezone.utc))
    return text


#: The questions of ``container-create --guided``, shared with ``container-deploy``.
_CREATE_QUESTIONS = (
    Question(
        "NAME",
        "Name of the new container (e.g. thesis)",
        validate=validators.container_name,
        required=True,
        checked_by="new-container",
    ),
    Question("--image", "Image to start from", choices_from="images", required=True),
    Question(
        "--gpus",
        "How many whole GPUs? (0 = none, or a MIG slice next)",
        "0",
        validate=validators.gpu_count,
        checked_by="gpu-count",
    ),
    Question(
        "--mig",
        "A MIG slice instead? (a profile, or Enter for no GPU)",
        choices_from="mig-profiles",
        ask_if=_no_gpus,
    ),
    Question("--memory", "Memory, e.g. 16G (Enter = your limit)", validate=validators.size),
    Question(
        "--port",
        "Publish a port, e.g. 8888 for Jupyter (Enter = none)",
        validate=validators.port,
    ),
)
#: The options of ``container-create`` that only ``--info`` lists.
_CREATE_MORE = (
    "--name",
    "--cpus",
    "--memory",
    "--shm-size",
    "--disk",
    "--workspace",
    "--data",
    "--no-wait",
    "--borrow",
    "--runtime-hours",
    "--json",
)

HELP: dict[str, CommandHelp] = {
    "container create": CommandHelp(
        info="""\
Creates container NAME from an image of the registry (`image-list`), with the GPUs you
ask for, your per-container CPU, memory and process limits, your `~/workspace` at
`/workspace`, and your own user inside. ds01d checks your quota before anything is
created; a refusal changes nothing.

- **GPUs**: `--gpus N` asks for N whole GPUs; `--mig PROFILE` (e.g. `3g.20gb`) for
  one MIG slice: a CUDA process uses only one, so a second `--mig` is refused (exit 2);
  ask for a larger profile, or whole GPUs. Without either, the container has no GPU.
  Not both.
- **Resources**: `--cpus`, `--memory`, `--shm-size` and `--disk` ask for less than your
  limits; more is refused (exit 3), never trimmed. Sizes are 1024-based: `16G`, `512M`.
  `--disk` bounds what the container writes outside `/workspace` and `/data` (its own
  filesystem: `/`, `/tmp`, `/root`); keep big files in `/workspace`.
- **Files**: `--workspace DIR` and `--data DIR` must be directories you own.
- **Ports**: `--port 8888` publishes on 127.0.0.1 only, on a free host port; `--port
  18888:8888` picks the host port (1024 or above). Repeatable.
- **When no device is free**, the request waits in the GPU queue and this command waits
  with it (Ctrl-C leaves it queued; `ds01 queue` shows it). `--no-wait` fails with exit
  3 instead. A queued container is started when its turn comes.
- **Above your quota**: where borrowing is on, `--borrow` (or `borrow: auto` in your
  limits) places a request over your GPU quota on idle devices, up to a cap, while
  nobody within quota waits for them. The container shows as borrowed; when someone
  within quota needs its devices you are warned, and it is stopped a few minutes later
  (its files are kept; `container-start` queues it again).
- **Runtime**: `--runtime-hours HOURS` (at most `max_runtime_hours`) stops it then; a
  short job may start on a GPU reserved from later.
- The container is left stopped unless `--start` is given; a container that is never
  started is removed after a while (30 minutes by default).
- NAME may be given as the first argument or with `--name`: 1-63 letters, digits, `_` or
  `-`, starting with a letter or digit.
- **On a Slurm cluster** (`cluster: slurm`): it submits a Slurm job named NAME, as you,
  and returns; the job creates and starts the container on the node Slurm picks, and
  removes it when the job ends (`scancel`, the time limit) or the container exits.
  `squeue -n NAME` follows it (docs/cluster.md).""",
        examples=(
            (
                "container-create thesis --image IMAGE --gpus 1",
                "one whole GPU (IMAGE: a name of `image-list`)",
            ),
            (
                "container-create nb --image IMAGE --mig 3g.20gb --port 8888 --start",
                "a MIG slice and Jupyter's port, started at once",
            ),
            ("container-create prep --image IMAGE --memory 16G", "no GPU, 16 GiB of memory"),
            ("container-create big --image IMAGE --gpus 2 --no-wait", "fail if not free now"),
            ("container-create --guided", "answer questions instead of typing options"),
        ),
        concepts=("containers", "images", "gpus", "quotas", "queue", "files", "ports"),
        questions=(
            *_CREATE_QUESTIONS,
            Question("--start", "Start it right away?", "y", yes_no=True),
        ),
        more=_CREATE_MORE,
    ),
    "container deploy": CommandHelp(
        info="""\
Does in one step what `container-create NAME --start` followed by `container-open NAME`
does: creates container NAME with the GPUs you ask for, starts it and opens a terminal
in it, as your own user, in `/workspace`. Leaving the terminal (`exit`, Ctrl-D) leaves
the container running; `container-open NAME` gets you back in, `container-stop NAME`
stops it.

- Every option of `container-create` works the same way: `--gpus`, `--mig`, `--memory`,
  `--port`, `--workspace`, `--data`, `--no-wait`. `--start` is implied.
- `--background` creates and starts it without opening a terminal, for a notebook server
  or a job you will look at later; so does `--json`.
- When no device is free, the request waits in the GPU queue first, and the terminal
  opens once the container has started.
- The exit status is that of the terminal's shell.""",
        examples=(
            ("container-deploy thesis --image IMAGE --gpus 1", "and a terminal in it"),
            (
                "container-deploy nb --image IMAGE --mig 3g.20gb --port 8888 -b",
                "a notebook server, no terminal",
            ),
            ("container-deploy --guided", "answer questions instead"),
        ),
        concepts=("containers", "gpus", "queue", "files", "ports", "idle"),
        questions=(
            *_CREATE_QUESTIONS,
            Question(
                "--background", "Leave it running without opening a terminal?", "n", yes_no=True
            ),
        ),
        more=(*_CREATE_MORE, "--start"),
    ),
    "container retire": CommandHelp(
        info="""\
Retires container NAME for good: stops it, removes it and frees its GPUs at once
(no `gpu_hold_after_stop_minutes` wait). Your `/workspace` is a directory on the
server and is never touched.

- `--keep-as IMAGE` first saves everything else you changed in the container
  (packages installed with pip or apt, tools, settings outside /workspace) as your
  own image `<you>/IMAGE`; `container-create NAME --image <you>/IMAGE` brings it back.
- `--discard` keeps nothing but /workspace.
- On a terminal it asks both questions; in scripts give `--keep-as` or `--discard`,
  and `--yes`.""",
        examples=(
            ("container-retire thesis --keep-as thesis-env", "keep its packages, then remove"),
            ("container-retire scratch --discard --yes", "remove it, no questions"),
        ),
        concepts=("containers", "images", "files"),
        questions=(
            _container_question("retire"),
            Question("--keep-as", "Keep what you installed as an image named (empty: no)", ""),
        ),
        more=("--user", "--json"),
    ),
    "container open": CommandHelp(
        info="""\
Opens a terminal in your container NAME: a login shell as your own user, in
`/workspace`, or the command given after `--`. A stopped container is started first
(waiting for GPUs like `container-start`). The terminal is a real one: colours, Ctrl-C,
full-screen programs (`htop`, `vim`) and window resizes all work.

- Leaving the shell (`exit`, Ctrl-D) leaves the container running; the exit status is
  that of the shell or the command.
- An open terminal counts as use: a container with one open is not idle.
- Only your own containers; admins open another user's with `--user USER`.
- Also as `container-attach`.""",
        examples=(
            ("container-open thesis", "a shell in /workspace"),
            ("container-open thesis -- python train.py", "run one command"),
            ("container-open thesis -- nvidia-smi", "see its GPUs"),
        ),
        concepts=("containers", "files", "idle"),
        questions=(_container_question("open"),),
        more=("--user",),
    ),
    "container start": CommandHelp(
        info="""\
Starts container NAME. If it still holds its GPUs it starts at once on the same devices.
If it gave them back (it was stopped for longer than `gpu_hold_after_stop_minutes`),
ds01d allocates devices again: the same ones if they are free, otherwise others of the
same kind (the container is re-created with its files kept), otherwise the request waits
in the GPU queue and this command waits with it; `--no-wait` fails with exit 3 instead.

- Published ports are shown once it runs (`127.0.0.1:49153->8888`).
- A container that reached `max_runtime_hours` is refused (exit 3): re-create it.
- Over your GPU quota, `--borrow` takes idle devices above it where borrowing is on; a
  borrowed container (one that was reclaimed, say) borrows again by itself.
- Starting a running container is not an error.
- Admins act on another user's container with `--user USER`.""",
        examples=(
            ("container-start thesis", "start it"),
            ("container-start thesis --no-wait", "fail rather than wait for GPUs"),
            ("container-start thesis --user alice", "admins: alice's container"),
        ),
        concepts=("containers", "queue", "idle"),
        questions=(
            _container_question("start"),
            Question(
                "--no-wait",
                "If its GPUs are gone and none are free, fail instead of waiting?",
                "n",
                yes_no=True,
            ),
        ),
        more=("--borrow", "--json", "--user"),
    ),
    "container stop": CommandHelp(
        info="""\
Stops container NAME: its processes get SIGTERM, then SIGKILL after a grace period.
Files inside it and in `/workspace` are kept; `container-start` brings it back.

- A stopped container keeps its GPUs for `gpu_hold_after_stop_minutes` (15 by default),
  then gives them back to others; it gets devices again when started.
- Stopped containers are removed after `container_hold_after_stop_hours` (a week by
  default); `/workspace` is kept.
- Stop a container you are not using: idle containers are stopped anyway after your
  `idle_timeout_hours`, and until then they hold GPUs others wait for.
- Admins act on another user's container with `--user USER`.""",
        examples=(
            ("container-stop thesis", "stop it, keep it"),
            ("container-stop thesis --user alice", "admins: alice's container"),
        ),
        concepts=("containers", "idle", "queue"),
        questions=(_container_question("stop"),),
        more=("--json", "--user"),
    ),
    "container remove": CommandHelp(
        info="""\
Removes container NAME and frees its GPUs at once. Everything inside the container is
lost; `/workspace` and `/data` live outside it and are kept.

- A running container is refused unless `--force` is given (it is stopped first).
- Removing is how you free your quota for another container (`max_containers`,
  `gpu_limit`).
- A container that reached `max_runtime_hours` is removed and re-created to run again.
- Admins act on another user's container with `--user USER`.""",
        examples=(
            ("container-remove thesis", "remove a stopped container"),
            ("container-remove thesis --force", "stop and remove a running one"),
        ),
        concepts=("containers", "files", "quotas"),
        questions=(
            _container_question("remove"),
            Question("--force", "Remove it even if it is running?", "n", yes_no=True),
        ),
        more=("--json", "--user"),
    ),
    "container list": CommandHelp(
        info="""\
Lists your containers: name, status, image, GPU-equivalents and device UUIDs. Columns
appear when they have something to say:

- **PORTS**: published ports, `127.0.0.1:HOST->CONTAINER` (`?` while stopped).
- **IDLE** and **STOP AT**: for a running container the loop watches, how long it has
  been idle and when it will be stopped; a line below says why (idle, runtime limit,
  exemption).
- **STATUS** counts processes the kernel killed for lack of memory ("2 OOM kills").

`--json` gives every field, including when and why OOM kills happened. Admins see
everyone's containers with `--all` (a USER column is added) or one user's with `--user
USER`.""",
        examples=(
            ("container-list", "your containers"),
            ("container-list --json", "the same, for scripts"),
            ("container-list --all", "admins: everyone's"),
        ),
        concepts=("containers", "gpus", "idle", "ports"),
        questions=(_json_question("the list"),),
        more=("--user", "--all"),
    ),
    "container logs": CommandHelp(
        info="""\
Shows what your container NAME printed: the output and errors of its main program
(JupyterLab, a training script started by the image) as the server kept them, in the
order printed. The first place to look when a container did not come up or stopped.

- All of it by default (the server keeps up to about 20 MB per container, the newest);
  `--tail N` shows only the last N lines (0 to 100000).
- `--follow` (`-f`) keeps showing new output as it is printed, until the container
  stops or you press Ctrl-C (exit 0).
- Output of commands you run in `container-open` goes to your terminal, not here.
- Works on stopped containers too; removing a container removes its output.
- Only your own containers; admins read another user's with `--user USER`.""",
        examples=(
            ("container-logs notebook", "everything it printed"),
            ("container-logs notebook --tail 20", "the last 20 lines"),
            ("container-logs thesis -f", "new output as it comes, until Ctrl-C"),
            ("container-logs thesis --user alice", "admins: alice's container"),
        ),
        concepts=("observing", "containers"),
        questions=(
            _container_question("read"),
            Question(
                "--tail",
                "Only the last N lines? (a number, or Enter for all)",
                "all",
                validate=validators.log_tail,
            ),
            Question("--follow", "Keep showing new output until Ctrl-C?", "n", yes_no=True),
        ),
        more=("--user",),
    ),
    "container stats": CommandHelp(
        info="""\
Shows what your containers use now, one line each: CPU (percent of one core, measured
over about a second), memory in use and its limit, the number of processes, and for each
GPU device it holds its utilisation and GPU memory in use. Stopped containers are listed
as stopped, without figures. `-` means not known (a MIG slice reports no utilisation).

- With NAME: that container only, with its GPU devices by UUID and its processes (host
  process id, user, CPU and memory of each, command line).
- `--json` gives the same as data, units in the names (`cpu_percent`, `memory_bytes`,
  `memory_limit_bytes`, `pids`, `gpus` with `utilization_percent` and
  `memory_used_bytes`, and `processes` with NAME).
- Only your own containers; admins see another user's with `--user USER`.""",
        examples=(
            ("container-stats", "all your containers"),
            ("container-stats thesis", "one, with its processes"),
            ("container-stats --json", "for scripts"),
        ),
        concepts=("observing", "gpus", "quotas"),
        questions=(
            Question(
                "NAME",
                "One container, with its processes? (Enter = all of yours)",
                choices_from="containers",
            ),
            _json_question("the figures"),
        ),
        more=("--user", "--json"),
    ),
    "queue": CommandHelp(
        info="""\
Lists your requests that wait in the GPU queue, in queue order, with position, waiting
time and status; or cancels one (`ds01 queue cancel ID`).

- Requests join the queue when `container-create` or `container-start` finds no suitable
  free device (unless `--no-wait`). They start by themselves when their turn comes.
- `--explain` adds each request's score and its parts (priority, fair share, age) and
  why it waits (`capacity`: no device free; `quota`: over your quota until you free
  some; …).
- Cancelling removes the request; nothing was created for it yet.
- Admins see everyone's requests with `--all`.""",
        examples=(
            ("ds01 queue", "your waiting requests"),
            ("ds01 queue --explain", "with each score's parts"),
            ("ds01 queue cancel 3f2a9c1b7e40", "withdraw a request"),
        ),
        concepts=("queue", "gpus", "quotas"),
        questions=(
            Question("ACTION", "List your requests or cancel one?", "list", required=True),
            Question(
                "ID",
                "Request to cancel",
                choices_from="queue",
                required=True,
                ask_if=_action_is("cancel"),
            ),
            Question(
                "--explain", "Show each score's parts?", "n", yes_no=True, ask_if=_action_is("list")
            ),
        ),
        more=("--json", "--all"),
    ),
    "job run": CommandHelp(
        info="""\
On a Slurm cluster, runs COMMAND (everything after `--`) to completion in a new
container from `--image IMAGE` (`-i`), as a Slurm job of yours, and removes the
container at the end. It checks the request as `container-create` does, submits the job,
prints its id and returns; Slurm picks the node and the time.

- **Resources**: `--gpus N` (`-g`) whole GPUs or `--mig PROFILE` one MIG slice;
  `--cpus`, `--memory SIZE` (`-m`) ask for less than your limits.
- **Time**: `--runtime-hours HOURS` is the job's time limit (at most your
  `max_runtime_hours`, which is the limit without it); Slurm stops the job then.
- **Output**: what the command prints goes to `~/.ds01/jobs/NAME-JOBID.out`, as it
  comes. The job ends with the command's exit status (`sacct -j JOBID`); 137 is a kill,
  as by the OOM killer when the job's memory is used up.
- **Waiting**: `--wait` waits for the end and exits with the command's status (Ctrl-C
  stops waiting; the job goes on). `--json` prints `name`, `slurm_job`, `output`,
  `sbatch` (and `exit_code` with `--wait`).
- `--name NAME` names the job and its container (`squeue -n NAME`, `scancel -n NAME`);
  the default is `job-` and the time. While it waits, `squeue -n NAME` says why.
- On a single server it is refused (exit 2): use `container-create` and
  `container-open NAME -- COMMAND`.""",
        examples=(
            ("ds01 job run --image IMAGE --gpus 1 -- python train.py", "one GPU, then return"),
            ("ds01 job run --image IMAGE --wait -- make test", "wait; exit as the command"),
            (
                "ds01 job run --image IMAGE --mig 3g.20gb --runtime-hours 2 -- python eval.py",
                "a MIG slice for at most 2 h",
            ),
        ),
        concepts=("containers", "gpus", "quotas"),
        questions=(
            Question("--image", "Image to run in", choices_from="images", required=True),
            Question(
                "--gpus",
                "How many whole GPUs? (0 = none)",
                "0",
                validate=validators.gpu_count,
                checked_by="gpu-count",
            ),
            Question("--wait", "Wait for it to end?", "n", yes_no=True),
        ),
        more=("--mig", "--cpus", "--memory", "--runtime-hours", "--name", "--json"),
    ),
    "reserve": CommandHelp(
        info="""\
Reserves whole GPUs (`--gpus N`) or one MIG instance (`--mig PROFILE`) for you from
`--from "YYYY-MM-DD HH:MM"` (the server's local time; seconds may be added) for
`--hours H`, with an optional `--note` that every listing shows.

- A window that overlaps other reservations beyond the devices there is refused with
  exit 3: the message names the reservation in the way and the next free slot.
- Your limits are checked (exit 3): by default up to your `gpu_limit` GPU-equivalents at
  once, at most 8 hours a reservation, at most 14 days ahead; admins may set how many
  reservations and how many GPU-hours a week.
- Other people's containers on the devices are warned before the start and stopped at
  it; during the window your containers may use the devices on top of your quota.
- Admins: `--maintenance` keeps the devices for nobody.""",
        examples=(
            ('ds01 reserve --gpus 2 --from "2026-12-10 09:00" --hours 8', "two GPUs for 8 h"),
            ('ds01 reserve --mig 3g.20gb --from "2026-12-11 14:00" --hours 3', "a MIG slice, 3 h"),
            ('ds01 reserve --gpus 1 --from "2026-12-12 08:00" --hours 2 --json', "for scripts"),
        ),
        concepts=("reservations", "gpus", "quotas"),
        questions=(
            Question("--gpus", "How many whole GPUs (0: one MIG slice instead)?", "1"),
            Question(
                "--mig",
                "Which MIG profile?",
                choices_from="mig-profiles",
                required=True,
                ask_if=_no_gpus,
            ),
            Question("--from", 'Start, "YYYY-MM-DD HH:MM" (server time)', required=True),
            Question("--hours", "For how many hours?", "2", required=True),
            Question("--note", "What for (everyone sees it; may be empty)?"),
        ),
        more=("--maintenance", "--json"),
    ),
    "reservations": CommandHelp(
        info="""\
Lists the reservations that have not ended: yours and maintenance windows, or everyone's
with `--all`, with their devices, window, status (`upcoming`, `active`) and note; or
cancels one of yours (`ds01 reservations cancel ID`; admins may cancel any).

- `--json` prints them for scripts.
- `--ics` prints them as an iCalendar feed (RFC 5545), one event each; an admin can
  publish `ds01 reservations --all --ics > gpus.ics` for the lab's calendar.
- Times are the server's local time.""",
        examples=(
            ("ds01 reservations", "yours and maintenance windows"),
            ("ds01 reservations --all", "everyone's"),
            ("ds01 reservations --all --ics", "an iCalendar feed"),
            ("ds01 reservations cancel 3f2a9c1b", "give one back"),
        ),
        concepts=("reservations", "gpus"),
        questions=(
            Question("ACTION", "List reservations or cancel one?", "list", required=True),
            Question("ID", "Reservation to cancel", required=True, ask_if=_action_is("cancel")),
            Question("--all", "Everyone's, not only yours?", "n", yes_no=True),
        ),
        more=("--json",),
    ),
    "gpu status": CommandHelp(
        info="""\
Shows every GPU device of the server, whole GPUs and MIG slices, with its UUID, its size
in GPU-equivalents and who holds it (`user/container`, `free` or `reserved`); a MIG
slice made for a request on a GPU with MIG on demand says `(on demand)`. Below the
table: GPUs that cannot be used now (e.g. MIG mode on without slices), the total
allocated and, when requests wait, the size of the queue.

Use it to see why a request waits or was refused, and which MIG profiles exist here. A
machine without an NVIDIA driver shows a clear "no GPUs" message, not an error.""",
        examples=(
            ("gpu-status", "every device and its holder"),
            ("gpu-status --json", "the devices, for scripts"),
        ),
        concepts=("gpus", "queue"),
        questions=(_json_question("the devices"),),
        more=("--json",),
    ),
    "limits": CommandHelp(
        info="""\
Shows your limits as ds01d resolves them, and what you use now: GPU-equivalents in use
(and which containers hold them) and your number of containers.

- A value comes from your own entry in `resource-limits.yaml`, else from your groups,
  else from the defaults; with several groups, the most generous value wins.
- `unlimited` means no limit for that key.
- `--explain` adds where each value came from (`user:alice`, `group:phd`, `defaults`,
  `built-in`) and the line of `resource-limits.yaml` that sets it; on a Slurm cluster
  also the Slurm QOS (and association) that holds it there.
- Admins see another user's limits with `--user USER`.""",
        examples=(
            ("check-limits", "your limits and usage"),
            ("check-limits --explain", "and where each value comes from"),
        ),
        concepts=("quotas", "gpus", "idle"),
        questions=(Question("--explain", "Show where each value comes from?", "y", yes_no=True),),
        more=("--json", "--user"),
    ),
    "image list": CommandHelp(
        info="""\
Lists the images you can use: first those of the registry (`images.yaml`, kept by the
admins) that are present on this server, with the name to give `container-create
--image`, the Docker reference, the framework and a description; then your own images
(built with `image-build`), which only you can use, by their tag.

- `--all` also lists registry images that are not present (a PRESENT column says
  which).
- `--catalog` shows the whole registry, present or not, with versions, GPU
  architectures and where each entry comes from (`images.yaml`, or AIME's
  `ml_images.repo` catalogue that the admins imported). `image-pull NAME` fetches a
  registry image that is not here.
- ds01 never downloads images by itself.""",
        examples=(
            ("image-list", "images you can use now, yours included"),
            ("image-list --all", "the registry, present or not"),
            ("image-list --catalog", "the whole catalogue, AIME imports included"),
        ),
        concepts=("images", "image-builds", "containers"),
        questions=(
            Question("--all", "Also list images that are not on this server?", "n", yes_no=True),
        ),
        more=("--json",),
    ),
    "image create": CommandHelp(
        info="""\
Writes a Dockerfile to build an image from, commented so you can read and change it:
`~/images/NAME/Dockerfile` by default (`--dir DIR` for another directory). It runs on
your own account and needs no daemon; nothing is built yet.

The Dockerfile has four phases:

1. the framework: `--framework pytorch` (default), `tensorflow` or `python`, each from
   an image of the registry; `--base IMAGE` starts from another image you may use;
2. JupyterLab, and a command that starts it on port 8888 (`--no-jupyter` leaves it
   out);
3. numpy, pandas, scipy, scikit-learn, matplotlib, seaborn (`--no-data-science`:
   none);
4. your use case: `--packages` (pip, e.g. `transformers==4.44.2`) and `--apt` (system
   packages), several at once or separated by commas.

NAME becomes an image name: lower case letters, digits, `-`, `_` and `.` (`My Project`
is written as `my-project`). An existing Dockerfile is never overwritten unless
`--force` is given. Then build it with `image-build NAME`.""",
        examples=(
            ("image-create thesis", "PyTorch, JupyterLab and data science"),
            (
                "image-create nlp --packages transformers datasets",
                "with the packages of your use case",
            ),
            (
                "image-create tabular --framework python --no-jupyter",
                "no deep learning, no Jupyter",
            ),
            ("image-create --guided", "answer questions instead"),
        ),
        concepts=("image-builds", "images", "projects"),
        questions=(
            _image_name_question(),
            Question("--framework", "Framework of phase 1", "pytorch", required=True),
            Question("--no-jupyter", "Leave JupyterLab out?", "n", yes_no=True),
            Question("--no-data-science", "Leave the data-science packages out?", "n", yes_no=True),
            Question(
                "--packages", "pip packages for your use case, separated by commas (Enter = none)"
            ),
            Question(
                "--dir",
                "Directory for the Dockerfile (Enter = ~/images/NAME)",
            ),
        ),
        more=("--base", "--apt", "--force", "--data-science", "--jupyter"),
    ),
    "image build": CommandHelp(
        info="""\
Builds image NAME through ds01d and tags it `<you>/NAME:TAG` (`--tag`, default
`latest`): an image only you can use, by that tag (`container-create NAME --image
alice/NAME:latest`).

- **The build directory** (`--context`, default `~/images/NAME` if it exists, else the
  current directory) must be a directory you own. ds01d reads it as you: a file you
  cannot read makes the build fail, it never ends up in the image. Keep it small: data
  sets belong in `--data` directories of containers, not in images (at most 4 GiB).
- **The Dockerfile** (`--file`, default `Dockerfile` in that directory) may start only
  from images you may use: a registry image (`image-list --catalog`) or one of your
  own. Its `LABEL`s may not use the `ds01.` prefix.
- **Limits**: every step runs with your CPU and memory limits (`check-limits`),
  counted in your totals like your containers, and without a GPU. A step that needs
  more memory is killed and the build fails.
- The output is shown as it comes, `[3/7]` marking each step; `--verbose` also shows
  Docker's bookkeeping. Ctrl-C cancels the build; nothing is tagged.
- Rebuilding a tag replaces the image; the old one is removed unless a container uses
  it. `--no-cache` runs every step again; `--pull` fetches a newer base image first.""",
        examples=(
            ("image-build thesis", "from ~/images/thesis/Dockerfile"),
            (
                "image-build thesis --context ~/projects/thesis --tag v2",
                "another directory, tag v2",
            ),
            ("image-build thesis --no-cache", "every step again"),
            ("image-build --guided", "answer questions instead"),
        ),
        concepts=("image-builds", "images", "quotas"),
        questions=(
            _image_name_question(),
            Question(
                "--context",
                "Build directory (Enter = ~/images/NAME, or here)",
                validate=validators.directory,
            ),
            Question("--tag", "Tag", "latest", validate=validators.image_tag),
            Question("--no-cache", "Run every step again, ignoring the cache?", "n", yes_no=True),
        ),
        more=("--file", "--pull", "--no-cache", "--verbose", "--json"),
    ),
    "image pull": CommandHelp(
        info="""\
Fetches an image onto this server through ds01d, showing Docker's progress: a registry
entry by its name (`image-list --catalog` lists them all, present or not), or an image
reference that `images.yaml` allows. Anything else is refused with exit 5 and
recorded.

Once it is here, `image-list` shows it and `container-create --image NAME` can use it.
Pulling an image that is here already fetches its newer version, if there is one. A
pull can take minutes; Ctrl-C stops watching, but the pull goes on in ds01d.""",
        examples=(
            ("image-pull pytorch", "the registry's PyTorch image"),
            ("image-pull pytorch-2.7.1-cuda12.8.0", "an entry of the AIME catalogue"),
        ),
        concepts=("images", "image-builds"),
        questions=(Question("IMAGE", "Registry name or image reference to pull", required=True),),
        more=("--json",),
    ),
    "image remove": CommandHelp(
        info="""\
Removes IMAGE (its tag, e.g. `alice/thesis:latest`), one of your own images. The image
itself goes once no other tag points at it.

- Another user's image, or a registry image, is refused with exit 5. Admins may remove
  any image; a registry image only with `--force`, since users rely on it.
- An image a container was created from is kept: remove the container first
  (`container-remove NAME`); the message names it.""",
        examples=(
            ("image-remove alice/thesis:v1", "an old version of your image"),
            ("image-remove lab/tool:latest --force", "admins: a registry image"),
        ),
        concepts=("image-builds", "images"),
        questions=(Question("IMAGE", "Image to remove (its tag)", required=True),),
        more=("--json", "--force"),
    ),
    "whoami": CommandHelp(
        info="""\
Shows who ds01d sees you as: user name, uid, groups and whether you are an admin. ds01d
learns this from the kernel (the connection's credentials) and the system's user
database, never from anything the client sends, so it is what decides your quota (your
groups) and what you may do.""",
        examples=(("ds01 whoami", "your identity"), ("ds01 whoami --json", "for scripts")),
        concepts=("quotas", "containers"),
        questions=(_json_question("your identity"),),
        more=("--json",),
    ),
    "events": CommandHelp(
        info="""\
Shows the events of the audit log that concern you, oldest first: those you caused
(creating, starting, stopping containers, refused requests) and those ds01d caused on
your containers (starting a queued request, releasing GPUs, idle and runtime stops).
Admins see everyone's events, or one user's with `--user USER`.

- Without filters: the newest 50 events (`--limit N` for more or fewer).
- `--action` takes an action (`container.create`), a family (`container`: every
  `container.…` action) or a pattern (`*.denied`, `cleanup.*`); repeat it or separate
  several with commas.
- `--container NAME` keeps the events about one of your containers, queue events for it
  included.
- `--since` and `--until` take a date or time (`2026-11-28`, `2026-11-28T14:00`, in
  your local time unless an offset is given), `today`, `yesterday`, or how long ago:
  `90s`, `30m`, `2h`, `3d`, `1w`.
- `--follow` shows the last 10 events, then every new one as it is written, until
  Ctrl-C.
- `--json` prints one JSON object per line (JSON Lines), also with `--follow`.""",
        examples=(
            ("ds01 events", "your newest 50 events"),
            ("ds01 events --since 2h", "what happened in the last two hours"),
            ("ds01 events --action cleanup --container thesis", "why thesis was stopped"),
            ("ds01 events --action '*.denied' --since 3d", "requests refused lately"),
            ("ds01 events --follow --json", "new events as they happen, for scripts"),
        ),
        concepts=("events", "idle", "queue"),
        questions=(
            Question(
                "--action",
                "Only some actions? e.g. container, cleanup, *.denied (Enter = all)",
            ),
            Question(
                "--container",
                "Only events about one of your containers? (Enter = all)",
                choices_from="containers",
            ),
            Question(
                "--since", "From when? e.g. 2h, 3d, 2026-11-28 (Enter = any time)", validate=_when
            ),
            Question("--follow", "Keep showing new events until Ctrl-C?", "n", yes_no=True),
        ),
        more=("--until", "--limit", "--user", "--json"),
    ),
    "simulate": CommandHelp(
        info="""\
Replays a workload trace through the GPU queue on a virtual clock, without a daemon and
without touching containers, and compares policies.

- The trace is a CSV file with the header
  `submit_hours,user,group,gpus,mig,duration_hours, idle_tail_hours`: when each request
  comes, whose it is, whole GPUs or a MIG profile, how long it runs and how long it then
  sits idle.
- `--config-dir` gives `resource-limits.yaml` (quotas, `scheduler:`, `policies:`) and
  `gpu-config.yaml` (the inventory); a missing file means the built-in default.
- `--policy` replays under fair share, first come first served, or both; `--reclaim`
  with idle reclaim, without, or all variants; `--mig` with the MIG layouts as
  configured, with every MIG GPU making slices on demand, or both; `--borrowing` without
  or with borrowing above quota (the `borrowing:` section), or both, then compared;
  `--reservations FILE` without and with GPU reservations
  (`made_hours,start_hours,hours,user,gpus,mig`), then compared: kept rate, jobs stopped
  and delayed.
- The report compares waits, GPU utilisation, idle GPU-hours and fairness per group;
  `--json` gives every number.""",
        examples=(
            (
                "ds01 simulate examples/traces/lab-week.csv --config-dir examples/traces",
                "the example week",
            ),
            ("ds01 simulate trace.csv --policy fair --json", "one policy, for scripts"),
        ),
        concepts=("simulation", "queue", "idle"),
        questions=(
            Question(
                "TRACE.csv",
                "Workload trace (CSV file)",
                validate=validators.existing_file,
                required=True,
            ),
            Question(
                "--config-dir",
                "Directory with resource-limits.yaml (Enter = built-in defaults)",
                validate=validators.directory,
            ),
            Question("--policy", "Policy to replay", "both"),
            Question("--reclaim", "Idle reclaim variants", "all"),
            Question("--mig", "MIG layouts or slices on demand", "layout"),
            Question("--borrowing", "Borrowing above quota: off, on or both", "off"),
        ),
        more=(
            "--json",
            "--reclaim",
            "--mig",
            "--borrowing",
            "--reservations",
            "--declared-runtime",
        ),
    ),
    "dashboard": CommandHelp(
        info="""\
Shows the whole machine in the terminal and refreshes it every 2 seconds (`--interval`):

- a usage bar: devices and GPU-equivalents allocated of the machine's total;
- one line per device (whole GPUs and MIG slices): its holder, utilisation and memory;
  a free device kept for the head of the GPU queue says so;
- containers with their state, GPUs, utilisation, idle time and when they will be
  stopped or removed (the lifecycle loop's last word; `-` before its first pass);
- the GPU queue and usage against quota.

You see every device, and for a device another user holds, that user's name; your own
containers, queue requests and quota. Admins see everyone's.

Keys in the live view: `s` cycles the sort column (user, name, state, gpu-eq, gpu%,
idle, cleanup), `u` filters by user (empty: everyone), `enter` or `d` shows a
container's details, `r` refreshes now, `q` quits. If ds01d does not answer, the last
frame stays and the status line says why. `--once` prints one frame as plain text
(scripts, logs, a terminal-less session); `--json` prints what ds01d answered (`GET
/v1/overview`).""",
        examples=(
            ("ds01-dashboard", "the live view"),
            ("ds01-dashboard --once", "one frame as text"),
            ("ds01-dashboard --once --sort cleanup --user alice", "what is stopped next"),
            ("ds01-dashboard --json", "the overview as JSON, for scripts"),
        ),
        concepts=("gpus", "idle", "queue", "quotas"),
        questions=(
            Question("--once", "Print one frame as text, not the live view?", "n", yes_no=True),
            Question("--sort", "Sort the containers by", "user"),
            Question("--user", "Only this user's containers (Enter = everyone)"),
        ),
        more=("--interval", "--json"),
    ),
    "user setup": CommandHelp(
        info="""\
Sets up your account for work on this server, and is safe to run again at any time:

- **workspace**: `~/workspace` (or `--workspace DIR`) is created if missing; every
  container sees it as `/workspace`.
- **SSH**: counts the keys in `~/.ssh/authorized_keys` and tightens its permissions if
  sshd would ignore it. `--add-ssh-key` adds a *public* key (its line, or a `.pub`
  file); a private key is refused. No key is ever generated here.
- **files for your laptop** in `~/.ds01/`: `ssh-config` (a block for your laptop's
  `~/.ssh/config`, with the JupyterLab tunnel) and `vscode-settings.json` (Remote-SSH
  settings). VS Code's server settings here are merged: your own values stay.
- **a starter container** (`--name`, default `notebook`) from the image the admins
  chose (`image-list` marks it), with the smallest GPU device your quota allows that is
  free now (a MIG slice if you may have one), or none if nothing is free (`--gpus`,
  `--mig`, `--no-gpu` choose yourself). It serves JupyterLab as you; user-setup waits
  until it answers. An existing container of that name is started, not created again.
- **the first steps**: the JupyterLab URL with its token, the SSH tunnel command and a
  quick reference, printed and saved in `~/.ds01/first-steps.txt`.

On a terminal it asks once before acting; `--yes` does not ask. `--no-container` sets up
files only.""",
        examples=(
            ("user-setup", "everything, with a question before acting"),
            (
                "user-setup --yes --add-ssh-key ~/laptop.pub --host gpu1.lab.example.org",
                "no questions; authorise your laptop's key",
            ),
            ("user-setup --no-gpu --name scratch", "a starter without a GPU"),
            ("user-setup --guided", "answer questions instead"),
        ),
        concepts=("remote", "ports", "files", "gpus", "idle"),
        questions=(
            Question(
                "--name",
                "Name of your starter container",
                "notebook",
                validate=validators.container_name,
            ),
            Question(
                "--add-ssh-key",
                "Your laptop's PUBLIC key line or .pub file to authorise (Enter = none)",
                validate=validators.public_key,
            ),
            Question("--host", "This server's name as your laptop reaches it (Enter = its FQDN)"),
            Question("--no-gpu", "Start it without a GPU?", "n", yes_no=True),
            Question("--yes", "Go ahead without asking again?", "y", yes_no=True),
        ),
        more=("--alias", "--local-port", "--timeout", "--workspace", "--json"),
    ),
    "project launch": CommandHelp(
        info="""\
Launches project DIR (default: the current directory), one made by `project-init`:

1. reads `[tool.ds01]` in `DIR/pyproject.toml`: the image (`<you>/NAME:TAG`) and the
   GPUs its containers ask for;
2. builds that image from `DIR/Dockerfile` through ds01d, exactly as `image-build` does
   (as you, with your CPU and memory limits), unless it exists already; `--rebuild`
   builds it again after you changed the Dockerfile or requirements;
3. deploys a container from it, as `container-deploy` does: named like the project
   (`--name`), with DIR mounted at `/workspace`, started, and a terminal opened in it
   (`--background`: none). When no device is free it waits in the GPU queue
   (`--no-wait`: fail with exit 3 instead).

`--gpus N` or `--mig PROFILE` overrides the project's GPU request. Images from
`project-init` serve JupyterLab: the URL is printed and `container-list` shows it.""",
        examples=(
            ("project-launch ~/workspace/thesis", "build if needed, deploy, open a terminal"),
            ("project-launch . --mig 1g.10gb --background", "on a MIG slice, no terminal"),
            ("project-launch . --rebuild", "after editing the Dockerfile"),
        ),
        concepts=("projects", "images", "image-builds", "containers", "files"),
        questions=(
            Question("DIR", "Project directory", ".", validate=validators.directory),
            Question("--gpus", "GPUs (Enter = the project's own)", validate=validators.gpu_count),
            Question("--rebuild", "Build the image again first?", "n", yes_no=True),
            Question("--background", "Leave it running without a terminal?", "n", yes_no=True),
        ),
        more=("--name", "--mig", "--no-wait", "--json"),
    ),
    "project init": CommandHelp(
        info="""\
Creates a project directory, by default `./NAME` (`--dir DIR` for another place), with:

- directories `data/{raw,processed,external}`, `models/checkpoints`, `notebooks`,
  `scripts`, `configs`, `outputs/{logs,figures}`, `tests`, and a Python package
  `src/NAME`;
- `README.md`, `.gitignore` (data, checkpoints, model files, caches);
- `pyproject.toml` with a `[tool.ds01]` section: type, framework, image name
  (`USER/NAME:latest`, where ds01 tags your images) and default GPU request (`--gpus`);
- `requirements.txt`: the use-case packages of `--type`;
- a `Dockerfile` in four commented phases: a base image of this site's registry,
  JupyterLab, data-science packages, and the same use-case packages. The base is the
  registry's starter if it fits the framework, else the first registry image of the
  framework (one on this machine first); `--image NAME` picks another
  (`image-list --catalog`). `pyproject.toml` records it as `base_image`.

Then `git init` (nothing is committed), when git is installed; `--no-git` skips it. It
runs on your own account and only asks ds01d for the registry (without ds01d it reads
`images.yaml`); nothing is built or downloaded. Files that
exist already are never overwritten unless `--force` is given: then nothing at all is
written. An existing directory is fine.

Types: `ml` (classical machine learning), `cv` (vision), `nlp` (language), `rl`
(reinforcement learning), `audio`, `ts` (time series), `llm` (large language models),
`custom` (no use-case packages). Frameworks: `pytorch`, `tensorflow`, `python` (a
registry image without a deep-learning framework, and Python).""",
        examples=(
            ("project-init thesis --type cv", "a PyTorch vision project in ./thesis"),
            (
                "project-init chatbot --type nlp --framework tensorflow --dir ~/workspace/chatbot",
                "elsewhere, with TensorFlow",
            ),
            ("project-init tabular --type ml --framework python --gpus 0", "no GPU needed"),
            ("project-init --guided", "answer questions instead"),
        ),
        concepts=("projects", "images", "files", "gpus"),
        questions=(
            Question(
                "NAME",
                "Project name (e.g. thesis)",
                validate=validators.project_name,
                required=True,
            ),
            Question("--type", "Kind of project", "ml", required=True),
            Question("--framework", "Deep learning framework", "pytorch", required=True),
            Question(
                "--gpus",
                "GPUs its containers ask for by default",
                "1",
                validate=validators.gpu_count,
            ),
            Question("--description", "One line about it (Enter = none)"),
            Question(
                "--dir",
                "Directory to create it in (Enter = ./NAME)",
            ),
            Question("--no-git", "Skip `git init`?", "n", yes_no=True),
        ),
        more=("--force", "--no-git", "--description"),
    ),
}
