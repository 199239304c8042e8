"""Invented worlds for benches: a seeded craft guild written as a Markdown corpus the offline extractor reads.

    python bench/make_world.py --seed 7 --processes 12 --steps 6 --out runs/worlds/seed7
    pwd-agent run --corpus runs/worlds/seed7 ...

examples/invented/corpus/ is one world, written by hand and tuned with the pipeline beside it; a bench
that only ever runs there measures, in part, that tuning. This script writes as many others as there
are seeds, in the same conventions (see examples/invented/README.md): a `# Title` per document, one
`## ` section per process, bold **terms** with a one-sentence definition each, a precondition sentence
("... requires ..."), exactly `--steps` step sentences opened by the cues pwd_agent.phrasing.CUE
reads (First, / Then / Next, / After that, / Afterwards, / Later, / Subsequently, / As a result, /
Finally,), and a closing "A common mistake is ..." or "Never ..." sentence. Every entity is a word
made of syllables drawn from the seed (each world its own syllable inventory), none an English word,
and every step names its process's own entities, so no step of one process fits another. Steps are 8
to 14 words, so training on a world stays cheap.

The same seed gives the same bytes (README.md included: it records the command with `--out DIR`);
another seed, another world. DIR must not exist or be empty: the world is written into a temporary
folder beside it and renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

VERSION = 1  # bump when a change to the tables or templates changes the output of a seed

# The offline extractor's bounds (config.extract.min_steps / max_steps defaults): with fewer steps a
# section yields no chain, with more the chain is cut.
MIN_STEPS, MAX_STEPS = 3, 8

# ---- words --------------------------------------------------------------------------------
# Each world draws its own inventory from these, so two seeds do not even sound alike. A word is one
# or two syllables and a last one closed by an ending English words seldom have.
ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "qu", "r", "s", "sk",
          "sl", "t", "th", "tr", "v", "vr", "z", "sh", "gl")
NUCLEI = ("a", "e", "i", "o", "u", "ae", "ei", "y", "au")
CODAS = ("", "l", "n", "r", "m", "s", "th", "ll")
LAST_CODAS = ("rv", "lv", "sk", "rn", "rm", "lk", "x", "th")
# The English words (proper nouns and inflections too) that this grammar can spell, found once by
# matching it against a dictionary (Debian's wamerican, 104,334 words), kept here so the script needs
# none: `python bench/make_world.py --english /usr/share/dict/words` prints the list again.
ENGLISH = frozenset("""
behemoth behemoths bellatrix bendix benelux betroth betroths bismuth borax botox bullhorn bullhorns damask
damasks deform deforms detox disarm disarms duluth durex fedex felix filofax firefox firestorm firestorms
forlorn gareth govern governs gymnosperm gymnosperms halifax helix hendrix hindemith hollerith kenneth kennith
kinfolk kinfolks kossuth lantern lanterns latex lavern lifeforms lilith linux lovelorn lummox malraux mammoth
mammoths matrix megalith megaliths menfolk meredith misgovern misgoverns misinform misinforms modern moderns
mollusk mollusks monolith monoliths multitask multitasks namath nazareth norfolk northern paradox parallax
pastern pasterns pentax perform performs pillbox pollux polymath polymaths prefix prolix pyrex reborn reform
reforms relax return returns rolex rolodex saturn semtex severn shorthorn shorthorns sideburns suborn suborns
sunburn sunburns surtax sussex syntax tampax tavern taverns telex thorax timex tinderbox vertex visigoth
vortex zenith zeniths zeroth
""".split())


def _grammar() -> re.Pattern:
    """Every word Lexicon can make (a superset: it ignores the checks in Lexicon.fits)."""
    def alt(xs: tuple[str, ...]) -> str:
        return "(?:" + "|".join(sorted((re.escape(x) for x in set(xs)), key=len, reverse=True)) + ")"
    syllable = alt(ONSETS) + alt(NUCLEI) + alt(CODAS)
    return re.compile(f"^(?:{syllable}){{1,2}}{alt(ONSETS)}{alt(NUCLEI)}{alt(LAST_CODAS)}$")


def english_words(dictionary: str | Path) -> list[str]:
    """The words of a dictionary file (one a line) that Lexicon could spell, bare or with a plural s."""
    grammar, found = _grammar(), set()
    for line in Path(dictionary).read_text(encoding="utf-8", errors="replace").split():
        word = line.strip().lower()
        if word.isalpha() and word.isascii() and (grammar.match(word) or grammar.match(word.removesuffix("s"))):
            found.add(word)
    return sorted(found)


class Lexicon:
    """Invented words from a seeded syllable inventory: none English, none inside another."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.onsets = tuple(sorted(rng.sample(ONSETS, 14)))
        self.nuclei = tuple(sorted(rng.sample(NUCLEI, 5)))
        self.codas = ("", "") + tuple(sorted(rng.sample(CODAS[1:], 3)))  # open syllables half the time
        self.last_codas = tuple(sorted(rng.sample(LAST_CODAS, 4)))
        self.used: list[str] = []

    def word(self) -> str:
        while True:
            n_open = 1 + (self.rng.random() < 0.2)
            syllables = [self._syllable(self.codas) for _ in range(n_open)] + [self._syllable(self.last_codas)]
            word = "".join(syllables)
            if self.fits(word):
                self.used.append(word)
                return word

    def _syllable(self, codas: tuple[str, ...]) -> str:
        return self.rng.choice(self.onsets) + self.rng.choice(self.nuclei) + self.rng.choice(codas)

    def fits(self, word: str) -> bool:
        """Pronounceable, not English, and no word inside another (the extractor matches a term's
        mentions as substrings)."""
        if not 5 <= len(word) <= 9 or re.search(r"(.)\1\1|[^aeiouy]{3}|[aeiouy]{3}|qu[uy]", word):
            return False
        if word in ENGLISH or f"{word}s" in ENGLISH:
            return False
        return not any(word in w or w in word for w in self.used)


# ---- what a process is made of ------------------------------------------------------------
VERBS = (("steeping", "steeps"), ("roasting", "roasts"), ("carding", "cards"), ("pressing", "presses"),
         ("tempering", "tempers"), ("curing", "cures"), ("grinding", "grinds"), ("boiling", "boils"),
         ("glazing", "glazes"), ("tanning", "tans"), ("rendering", "renders"), ("sifting", "sifts"),
         ("soaking", "soaks"), ("smoking", "smokes"), ("kneading", "kneads"), ("bleaching", "bleaches"),
         ("salting", "salts"), ("firing", "fires"), ("retting", "rets"), ("milling", "mills"))
COLOURS = ("amber", "grey", "ochre", "russet", "violet", "green", "silver", "bronze", "white", "crimson",
           "umber", "slate-blue")
MATERIAL_KINDS = ("resin", "fibre", "ore", "bark", "root", "clay", "seed", "moss", "salt", "leaf", "sap", "shell")
TOOL_KINDS = ("hook", "comb", "paddle", "ladle", "sieve", "awl", "scraper", "mallet", "rake", "tongs")
VESSEL_KINDS = ("vat", "trough", "kiln", "tub", "basin", "pit", "oven", "cask")
PRODUCT_KINDS = ("cloth", "dye", "ingot", "thread", "glaze", "paper", "cord", "oil", "powder", "board", "felt",
                 "wax")
STUFFS = ("fired clay", "black stone", "pale wood", "beaten copper", "woven reed", "horn", "bone")
SEASONS = ("early spring", "late autumn", "the wet season", "the dry season", "midsummer")
NUMBERS = ("two", "three", "four", "five", "six")
HALL_KINDS = ("Works", "Yard", "Vats", "Sheds", "Kilns", "Mill", "Terraces", "Lofts")

# The extractor takes as a term's definition the first sentence in which the term is followed by "is"
# or "are", so no sentence but a term's own definition says "<term> is" ("in which the guild works X",
# not "in which X is worked").
# Slots: W worker, M material, T tool, V vessel, P product (all invented words of this process),
# U the guild's unit of time, C a colour (aC with its article), N a number word, v3 the process's verb, Proc its name.
DEFINITIONS = {
    "process": ("**{Proc}** is the work in which the {W} turns raw {M} into {P}.",
                "**{Proc}** is the craft that makes {P} from {M} in the {V}."),
    "worker": ("The **{W}** is the guild worker who keeps the {V}.",
               "A **{W}** is a guild worker trained in {proc}."),
    "material": ("**{M}** is {aC} {mkind} that the guild gathers in {season}.",
                 "**{M}** is the {C} {mkind} that yields {P}."),
    "tool": ("A **{T}** is a {tkind} of {stuff} with {aC} handle.",
             "A **{T}** is the {tkind} of {stuff} used in {proc}."),
    "vessel": ("The **{V}** is a {vkind} of {stuff} in which the guild works {M}.",
               "A **{V}** is a broad {vkind} of {stuff} set over a low fire."),
    "product": ("**{P}** is the {C} {pkind} that {proc} yields.",
                "**{P}** is {aC} {pkind} prized across the guild."),
}
PRECONDITIONS = ("{Proc} requires {M} that has dried for {N} {U}s on open racks.",
                 "{Proc} requires a {V} that has been scoured and warmed the night before.",
                 "Before {proc} begins, the {T} must be ground sharp and oiled.",
                 "{Proc} requires a full measure of fresh {M} and a clean {V}.")
FIRST = ("the {W} breaks the raw {M} into small lumps with a {T}.",
         "the {W} sorts the raw {M} by size beside the {V}.",
         "the {W} washes the {M} in cold water and dries the {T}.",
         "the {W} weighs out {N} baskets of {M} for the {V}.",
         "the {W} scours the {V} with sand and a wet {T}.")
MIDDLE = ("the {W} packs the {M} into the {V} in thin even layers.",
          "the {W} {v3} the {M} inside the {V} for {N} {U}s.",
          "the {W} stirs the {M} slowly in the {V} with a {T}.",
          "the {W} seals the {V} with {C} clay over embers.",
          "the {W} draws the softened {M} from the {V} with a {T}.",
          "the {W} spreads the {M} on racks to dry.",
          "the {W} scrapes the {C} crust from the {M} with a {T}.",
          "the {W} presses the {M} flat under a heavy {T}.",
          "the {W} strains the {M} through a {T} into a clean {V}.",
          "the {W} rests the {M} in the covered {V} for one {U}.",
          "the {W} mixes {N} handfuls of ash into the {V}.",
          "the {W} beats the {M} with the {T} for {N} {U}s.")
RESULT = ("the {M} softens and gives off a sharp {C} vapour.",
          "the {M} turns {C} and grows soft enough to work.",
          "a thin {C} film of {P} gathers on the {V}.",
          "the {M} shrinks by a third and hardens inside the {V}.",
          "the {M} gives up {aC} liquor into the {V}.")
FINAL = ("the {W} lifts the finished {P} out of the {V}.",
         "the {M} has become {C} {P}, ready for the guild store.",
         "the {W} cuts the cooled {P} into bars with a {T}.",
         "the {W} wraps the {P} in {C} cloth for the guild store.",
         "the {W} hangs the {P} to cure on a rack beside the {V}.")
MISTAKES = ("A common mistake is to fill the {V} too full, because the {M} boils over and is lost.",
            "Never touch raw {M} with a bare hand, because raw {M} blisters the skin.",
            "A common mistake is to use a damp {T}, because a damp {T} stains the {P}.",
            "Never leave the {V} uncovered at night, because rain spoils the {M} inside.",
            "A common mistake is to hurry the {W}, because hurried {P} cracks within a {U}.")
# The cues of the steps between the first ("First,") and the last ("Finally,"); the last of them is
# "As a result," (a causal link, which the extractor keeps as the predicate "causes") from 5 steps on.
MIDDLE_CUES = ("Then", "Next,", "After that,", "Afterwards,", "Later,", "Subsequently,")


@dataclass(frozen=True)
class Process:
    name: str  # the `## ` heading, e.g. "Quorrin steeping"
    sentences: tuple[str, ...]  # definitions, precondition, steps, mistake: the section's one paragraph
    steps: tuple[str, ...]


def _step_cues(n_steps: int) -> list[str]:
    middle = list(MIDDLE_CUES[: n_steps - 2])
    if n_steps >= 5:
        middle[-1] = "As a result,"
    return ["First,", *middle, "Finally,"]


def _fill(template: str, slots: dict[str, str]) -> str:
    """The template filled, its first letter upper case (behind any bold marks: "**Velm** is ...")."""
    text = template.format(**slots)
    first = re.search(r"[A-Za-z]", text).start()
    return text[:first] + text[first].upper() + text[first + 1 :]


def make_process(rng: random.Random, lexicon: Lexicon, unit: str, n_steps: int) -> Process:
    """One process: its invented entities, definitions, precondition, `n_steps` steps and a mistake."""
    gerund, v3 = rng.choice(VERBS)
    w, m, t, v, p = (lexicon.word() for _ in range(5))
    name = f"{m.capitalize()} {gerund}"
    colour = rng.choice(COLOURS)
    slots = dict(W=w, M=m, T=t, V=v, P=p, U=unit, v3=v3, Proc=name, proc=name.lower(), C=colour,
                 aC=f"{'an' if colour[0] in 'aeiou' else 'a'} {colour}",
                 N=rng.choice(NUMBERS), mkind=rng.choice(MATERIAL_KINDS), tkind=rng.choice(TOOL_KINDS),
                 vkind=rng.choice(VESSEL_KINDS), pkind=rng.choice(PRODUCT_KINDS), stuff=rng.choice(STUFFS),
                 season=rng.choice(SEASONS))
    definitions = [_fill(rng.choice(DEFINITIONS["process"]), slots)]
    others = [_fill(rng.choice(DEFINITIONS[k]), slots) for k in ("worker", "material", "tool", "vessel", "product")]
    rng.shuffle(others)
    definitions += others[: rng.randint(3, 5)]
    cues = _step_cues(n_steps)
    bodies = [rng.choice(FIRST), *rng.sample(MIDDLE, n_steps - 2), rng.choice(FINAL)]
    if n_steps >= 5:
        bodies[-2] = rng.choice(RESULT)
    steps = tuple(f"{cue} {body.format(**slots)}" for cue, body in zip(cues, bodies, strict=True))
    sentences = (*definitions, _fill(rng.choice(PRECONDITIONS), slots), *steps, _fill(rng.choice(MISTAKES), slots))
    return Process(name, sentences, steps)


def make_world(seed: int, processes: int = 12, steps: int = 6, per_doc: int = 3) -> dict[str, str]:
    """File name -> Markdown text of the world of `seed`: the documents and README.md."""
    if not MIN_STEPS <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be {MIN_STEPS} to {MAX_STEPS} (the offline extractor's min/max_steps), "
                         f"not {steps}")
    if processes < 1 or per_doc < 1:
        raise ValueError("processes and per_doc must be at least 1")
    rng = random.Random(seed)
    lexicon = Lexicon(rng)
    guild, unit, unit_days = lexicon.word().capitalize(), lexicon.word(), rng.choice(NUMBERS)
    n_docs = -(-processes // per_doc)
    width = max(2, len(str(n_docs)))
    files = {}
    for d in range(n_docs):
        hall, kind = lexicon.word().capitalize(), rng.choice(HALL_KINDS)
        made = [make_process(rng, lexicon, unit, steps) for _ in range(min(per_doc, processes - d * per_doc))]
        lines = [f"# The {hall} {kind}", "",
                 f"At the {hall} {kind}, the {guild} guild carries out the {_count(len(made))} below in the order "
                 f"given. A **{unit}** is the guild's measure of time, {unit_days} days long."]
        for proc in made:
            lines += ["", f"## {proc.name}", "", " ".join(proc.sentences)]
        files[f"{d + 1:0{width}d}_{hall.lower()}_{kind.lower()}.md"] = "\n".join(lines) + "\n"
    files["README.md"] = _readme(seed, processes, steps, per_doc, guild, n_docs)
    return files


def _count(n: int) -> str:
    return "one craft" if n == 1 else f"{NUMBERS[n - 2] if n - 2 < len(NUMBERS) else n} crafts"


def _readme(seed: int, processes: int, steps: int, per_doc: int, guild: str, n_docs: int) -> str:
    return (f"# Generated world: the {guild} guild\n\n"
            f"This folder was generated by `bench/make_world.py` (generator version {VERSION}) from seed {seed}: "
            f"an invented craft guild of {processes} processes of {steps} steps each, in {n_docs} documents of up "
            f"to {per_doc} processes. Every name in it is made of syllables drawn from the seed, so no model has "
            f"read about it. Edits by hand would be lost: the same command with the same seed writes the same "
            f"bytes.\n\n"
            f"```bash\npython bench/make_world.py --seed {seed} --processes {processes} --steps {steps} "
            f"--per-doc {per_doc} --out DIR\n```\n")


def write_world(files: dict[str, str], out: str | Path) -> Path:
    """Writes `files` into `out` (missing or empty) at once: into a temporary folder, then renamed."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder: choose another --out, "
                              "or remove it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0o700
        os.replace(tmp, out)  # replaces an empty folder; fails on a non-empty one made meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="the world: the same seed gives the same bytes")
    parser.add_argument("--processes", type=int, default=12, help="processes in the world (default 12)")
    parser.add_argument("--steps", type=int, default=6,
                        help=f"steps per process, {MIN_STEPS} to {MAX_STEPS} (default 6)")
    parser.add_argument("--per-doc", type=int, default=3, help="processes per document (default 3)")
    parser.add_argument("--out", help="folder to create (must not exist, or be empty)")
    parser.add_argument("--english", metavar="DICT",
                        help="print the words of a dictionary file the syllables can spell (for ENGLISH), and exit")
    args = parser.parse_args(argv)
    if args.english:
        print("\n".join(english_words(args.english)))
        return 0
    if args.seed is None or args.out is None:
        parser.error("--seed and --out are required")
    try:
        files = make_world(args.seed, args.processes, args.steps, args.per_doc)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        out = write_world(files, args.out)
    except (FileExistsError, OSError) as exc:
        print(f"make_world: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(files) - 1} documents, {args.processes} processes of {args.steps} steps, to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
