"""Build the saewidgets demo corpus (deterministic, seeded).

The demo corpus must ship with the package because no machine running the demo can reach a dataset hub. All
sentences, dialogues, poems and code snippets below were written for this project; the script combines them with
entity lists (names, cities, numbers, identifiers) and shuffles them so that every concept appears in many
different contexts, which is what a sparse autoencoder needs to find concept features rather than token features.

Usage::

    python build_corpus.py                      # writes demo_corpus.jsonl.gz next to this file
    python build_corpus.py --stats /tmp/gemma_tok   # also prints Gemma token counts per topic and language

Output: one JSON object per line, ``{"id", "topic", "lang", "text"}``, gzip-compressed with a fixed mtime so that
rebuilding gives byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections import Counter
from pathlib import Path

SEED = 20260521
HERE = Path(__file__).resolve().parent
OUT = HERE / "demo_corpus.jsonl.gz"

# --------------------------------------------------------------------------------------------------------------
# Shared slot values. Each document draws one value per slot, so a name keeps referring to the same person.
# --------------------------------------------------------------------------------------------------------------
SLOTS: dict[str, list[str]] = {
    "name": ["Maya", "Daniel", "Priya", "Tomás", "Aiko", "Liam", "Fatima", "Jonas", "Chloé", "Marcus", "Elena",
             "Kwame", "Sofia", "Hiro", "Grace", "Mateo", "Nadia", "Oliver", "Leila", "Ben", "Yuki", "Rosa",
             "Arjun", "Hannah", "Diego", "Ingrid", "Samir", "Zoe", "Pavel", "Amara"],
    "name2": ["Alex", "Jordan", "Sam", "Taylor", "Chris", "Robin", "Morgan", "Jamie", "Casey", "Riley", "Noor",
              "Kai", "Lena", "Omar", "Iris", "Felix", "Mei", "Hugo", "Ana", "Theo"],
    "country": ["Germany", "Japan", "Brazil", "India", "France", "Australia", "Mexico", "Kenya", "Canada",
                "Italy", "South Korea", "Spain", "Norway", "Argentina", "Egypt", "the Netherlands"],
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"],
    "year": [str(y) for y in range(1998, 2025)],
    "hour": ["six", "seven", "eight", "nine", "ten", "eleven"],
    "n": [str(n) for n in (2, 3, 4, 5, 6, 8, 10, 12, 15, 20)],
    "big": ["40,000", "55,000", "70,000", "85,000", "100,000", "112,000"],
    "color": ["gray", "silver", "pink", "gold", "violet", "pale blue"],
}


def render(template: str, ctx: dict[str, str]) -> str:
    """Fill ``{slot}`` fields of ``template`` from ``ctx`` (unknown fields are an error, on purpose)."""
    return template.format(**ctx)


def pick(rng: random.Random, pool: list[str], k: int) -> list[str]:
    """Sample ``k`` distinct items (or all of them if the pool is smaller), in random order."""
    return rng.sample(pool, min(k, len(pool)))


def run_script(rng: random.Random, steps: list[list[str]]) -> list[str]:
    """Render an ordered script: one alternative per step; an empty string alternative skips the step."""
    return [line for line in (rng.choice(step) for step in steps) if line]


def new_ctx(rng: random.Random, extra: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Draw one value per slot for one document."""
    slots = {**SLOTS, **(extra or {})}
    ctx = {k: rng.choice(v) for k, v in slots.items()}
    if ctx["name2"] == ctx["name"]:
        ctx["name2"] = "Alex"
    return ctx


def paragraphs(rng: random.Random, pools: list[list[str]], ctx: dict[str, str], lo: int, hi: int) -> str:
    """Join one paragraph per pool, each of ``lo``..``hi`` sampled sentences."""
    paras = [" ".join(pick(rng, pool, rng.randint(lo, hi))) for pool in pools]
    return render("\n\n".join(paras), ctx)


# --------------------------------------------------------------------------------------------------------------
# The Golden Gate Bridge, in many registers.
# --------------------------------------------------------------------------------------------------------------
GGB_HISTORY = [
    "Construction of the Golden Gate Bridge began on January 5, 1933, and the bridge opened to pedestrians on May 27, 1937.",
    "Chief engineer Joseph Strauss spent more than a decade campaigning for the Golden Gate Bridge before the first shovel hit the ground.",
    "Historians now credit Charles Ellis and Leon Moisseiff with much of the structural analysis behind the Golden Gate Bridge, although Joseph Strauss took most of the public credit.",
    "Irving Morrow, a modest residential architect, designed the Art Deco towers and picked the International Orange color of the Golden Gate Bridge.",
    "When it opened in 1937, the Golden Gate Bridge had the longest main span of any suspension bridge in the world: 4,200 feet between its towers.",
    "On Pedestrian Day in May 1937, roughly two hundred thousand people walked across the Golden Gate Bridge; cars were allowed on the next day.",
    "Before the Golden Gate Bridge existed, the only way to cross the strait between San Francisco and Marin County was by ferry.",
    "A safety net hung under the deck during construction of the Golden Gate Bridge saved nineteen workers, who jokingly called themselves the Halfway to Hell Club.",
    "Eleven men died building the Golden Gate Bridge, ten of them in a single accident when a scaffold fell through the safety net in February 1937.",
    "Voters in six counties approved bonds for the Golden Gate Bridge in 1930, and the last of those bonds was paid off in 1971.",
    "For the fiftieth anniversary of the Golden Gate Bridge in 1987, so many people crowded onto the deck that the arch of the roadway flattened under their weight.",
    "The strait was named the Golden Gate by John C. Frémont around 1846, nearly a century before anyone built a bridge across it.",
    "In the 1920s, skeptics argued that the Golden Gate Bridge could never be built because of the fierce tides, the deep water and the constant fog.",
    "The ferry companies and the War Department both opposed the Golden Gate Bridge at first, worried about lost business and blocked shipping.",
    "Joseph Strauss wrote a poem called The Mighty Task Is Done when the Golden Gate Bridge was finished in 1937.",
    "For decades the Golden Gate Bridge was the tallest structure in the region, and it is still one of the most photographed bridges on Earth.",
    "The Golden Gate Bridge was declared one of the Wonders of the Modern World by the American Society of Civil Engineers in 1994.",
    "When the Golden Gate Bridge opened, President Franklin D. Roosevelt pressed a telegraph key in Washington to announce it to the world.",
]
GGB_ENGINEERING = [
    "The Golden Gate Bridge is a suspension bridge: its deck hangs from vertical suspender ropes attached to two main cables.",
    "Each main cable of the Golden Gate Bridge is about 36 inches thick and is made of 27,572 parallel galvanized steel wires.",
    "The wire inside the two main cables of the Golden Gate Bridge would wrap around the Earth more than three times.",
    "The two towers of the Golden Gate Bridge rise 746 feet above the water, and each one weighs about 44,000 tons.",
    "The south tower of the Golden Gate Bridge stands on a pier built in open water, where divers could work only during slack tide.",
    "After the 1989 Loma Prieta earthquake, engineers began a seismic retrofit so that the Golden Gate Bridge could survive a much larger quake.",
    "In very strong winds the deck of the Golden Gate Bridge can swing sideways by more than twenty feet, exactly as its designers intended.",
    "Counting the approaches, the Golden Gate Bridge is about 1.7 miles long, and the main span alone is 4,200 feet.",
    "The main cables of the Golden Gate Bridge are anchored in enormous concrete blocks buried on each shore.",
    "At high tide the roadway of the Golden Gate Bridge sits roughly 220 feet above the water, high enough for large ships to pass beneath.",
    "A steel net was added below the sidewalks of the Golden Gate Bridge and finished in 2024 to prevent suicides.",
    "Since new railing slats were installed in 2020, the Golden Gate Bridge hums an eerie chord whenever a strong westerly wind blows.",
    "Painters and ironworkers maintain the Golden Gate Bridge all year round, because salt air and fog constantly attack the steel.",
    "International Orange was chosen for the Golden Gate Bridge because it stays visible in fog and harmonizes with the hills around it.",
    "Despite the name, the Golden Gate Bridge is not gold at all; it is painted a warm reddish color called International Orange.",
    "The U.S. Navy once proposed painting the Golden Gate Bridge with black and yellow stripes so that ships could see it in fog.",
    "The original 1937 roadway deck of the Golden Gate Bridge was replaced in the 1980s with a lighter orthotropic steel deck.",
    "Thermal expansion makes the deck of the Golden Gate Bridge rise and fall by several feet between a cold night and a hot afternoon.",
    "Engineers study the Golden Gate Bridge as a classic example of how a suspension bridge spreads loads into its towers and anchorages.",
    "Unlike an arch bridge or a cable-stayed bridge, a suspension bridge such as the Golden Gate Bridge carries its deck almost entirely in tension.",
    "Foghorns mounted on the Golden Gate Bridge warn ships approaching the narrow entrance to San Francisco Bay.",
    "Each tower of the Golden Gate Bridge is made of hollow steel cells riveted together, about 600,000 rivets per tower.",
    "The suspender ropes of the Golden Gate Bridge hang every fifty feet and were all replaced in the 1970s.",
    "Strong tidal currents rush through the strait under the Golden Gate Bridge four times a day.",
    "The Golden Gate Bridge was designed to withstand winds of about one hundred miles per hour.",
]
GGB_TOURISM = [
    "The best free view of the Golden Gate Bridge is from Battery Spencer, a short walk up the Marin Headlands.",
    "Walking across the Golden Gate Bridge takes about forty minutes each way if you stop to take photos.",
    "Many visitors rent bikes near Fisherman's Wharf, ride along Crissy Field, cross the Golden Gate Bridge and take the ferry back from Sausalito.",
    "The Golden Gate Bridge Welcome Center has maps, souvenirs and a cross-section of the main cable that you can touch.",
    "Fort Point sits right under the southern end of the Golden Gate Bridge, and the view of the steel arch from below is unforgettable.",
    "Visitors from {country} often say the Golden Gate Bridge is much bigger than they expected from photographs.",
    "Bring a jacket: even in summer the wind on the Golden Gate Bridge can be cold and damp.",
    "The east sidewalk of the Golden Gate Bridge is usually open to pedestrians during the day, while cyclists share the west side.",
    "From the Presidio you can follow the coastal trail to the toll plaza of the Golden Gate Bridge in about twenty minutes.",
    "A bay cruise from Pier 39 passes under the Golden Gate Bridge and turns back near the open Pacific.",
    "Tour buses stop at Vista Point on the Marin side so that passengers can photograph the Golden Gate Bridge with the city behind it.",
    "If you only have one day in San Francisco, walk to the middle of the Golden Gate Bridge and look back at the skyline.",
    "Our guide told us that the Golden Gate Bridge is busiest with tourists on summer weekends, so we went early on a {weekday} instead.",
    "Parking near the Golden Gate Bridge fills up quickly, so most travel guides recommend the bus or a bike.",
    "Families picnic on the lawn at Crissy Field while watching sailboats pass under the Golden Gate Bridge.",
    "Five stars: we walked across the Golden Gate Bridge at sunrise and had the whole sidewalk almost to ourselves.",
    "Three stars: the Golden Gate Bridge is beautiful, but it was so foggy that we saw only the first tower.",
    "Four stars: unforgettable views from the Golden Gate Bridge, but the wind was brutal and the sidewalk was crowded with bikes.",
    "Tip from a local: see the Golden Gate Bridge from the water on the Sausalito ferry; it's cheaper than a cruise.",
    "The gift shop at the Golden Gate Bridge sells everything from orange scarves to miniature cable samples.",
    "Kids love spotting seals and dolphins in the water below the Golden Gate Bridge.",
    "Joggers run the loop from the Marina across the Golden Gate Bridge and back, about ten miles in all.",
]
GGB_PHOTO = [
    "For sunrise, photographers set up at Baker Beach; for sunset, many prefer Hawk Hill above the Golden Gate Bridge.",
    "When the fog rolls in, only the tops of the towers of the Golden Gate Bridge poke through a white blanket of cloud.",
    "A long lens from Lands End compresses the Golden Gate Bridge against the dark hills of the Marin Headlands.",
    "The classic postcard shot of the Golden Gate Bridge is taken from Battery Spencer, with the city skyline framed between the cables.",
    "At night, a slow shutter turns the traffic on the Golden Gate Bridge into streaks of red and white light.",
    "Photographers call the summer fog around the Golden Gate Bridge Karl, and they check the forecast before every shoot.",
    "{name} waited three mornings in a row before the fog finally lifted and the Golden Gate Bridge glowed orange in the first light.",
    "Shooting the Golden Gate Bridge from underneath at Fort Point shows the geometry of the steel in a way few postcards do.",
    "A drone is not allowed near the Golden Gate Bridge without permission, so most aerial photos are taken from helicopters.",
    "In black and white, the Golden Gate Bridge looks almost like an engraving, all cables and shadows.",
    "The International Orange of the Golden Gate Bridge looks most saturated just after sunset, when the sky turns {color}.",
    "Every photographer who visits San Francisco seems to come home with the same picture of the Golden Gate Bridge in the fog, and every one of them is proud of it.",
    "On the rare clear winter days, the Golden Gate Bridge looks sharp enough to cut, with the snowless hills of Marin behind it.",
    "Some photographers wait for a full moon to rise between the towers of the Golden Gate Bridge.",
    "A wide-angle lens at the south tower makes the Golden Gate Bridge look like it is leaning over you.",
]
GGB_COMMUTE = [
    "On an average weekday, about {big} vehicles cross the Golden Gate Bridge.",
    "Tolls on the Golden Gate Bridge are charged only southbound, into San Francisco, and there are no toll booths anymore: it is all electronic.",
    "{name} drives across the Golden Gate Bridge from Sausalito to an office in the Financial District every morning at {hour} o'clock.",
    "A movable median barrier on the Golden Gate Bridge is shifted twice a day to give more lanes to rush-hour traffic.",
    "Golden Gate Transit buses and ferries carry thousands of commuters from Marin and Sonoma counties into the city.",
    "When an accident blocks a lane on the Golden Gate Bridge, traffic backs up all the way through the Waldo Tunnel.",
    "Cyclists commuting over the Golden Gate Bridge learn to lean into the crosswind halfway across the main span.",
    "The morning traffic report always starts the same way: the Golden Gate Bridge is moving well, the Bay Bridge is slow.",
    "On foggy mornings, drivers on the Golden Gate Bridge switch on their headlights and follow the taillights in front of them.",
    "Some commuters skip the Golden Gate Bridge entirely and take the ferry from Larkspur, reading the news while the boat crosses the bay.",
    "Because the toll is collected electronically, visitors who drive over the Golden Gate Bridge in a rental car often get the bill weeks later.",
    "{name} has biked across the Golden Gate Bridge to work for {n} years and says the view has never gotten old.",
    "On weekends the Golden Gate Bridge fills with tourists on rented bikes, so local cyclists ride early.",
    "When the Golden Gate Bridge closes for a race or a celebration, traffic spills onto every other crossing of the bay.",
    "Bus route 130 and the ferries are the main alternatives for Marin commuters who want to avoid driving over the Golden Gate Bridge.",
]
GGB_COMPARE = [
    "The Golden Gate Bridge is often compared with the Brooklyn Bridge, which opened in 1883 and was the first steel-wire suspension bridge.",
    "The Akashi Kaikyo Bridge in Japan has a main span almost twice as long as the Golden Gate Bridge.",
    "The Bay Bridge carries more traffic, but the Golden Gate Bridge gets almost all of the attention from tourists.",
    "Tower Bridge in London is a bascule bridge that opens for ships, while the Golden Gate Bridge is simply high enough for them to pass underneath.",
    "The Millau Viaduct in France has taller masts than the towers of the Golden Gate Bridge, but it is a cable-stayed bridge, not a suspension bridge.",
    "The Sydney Harbour Bridge is a steel arch bridge, heavier and wider than the Golden Gate Bridge, and it opened only five years earlier, in 1932.",
    "The 25 de Abril Bridge in Lisbon looks so much like the Golden Gate Bridge that visitors often mistake one for the other.",
    "Just as the Eiffel Tower stands for Paris, the Golden Gate Bridge stands for San Francisco.",
    "The Verrazzano-Narrows Bridge in New York took the record for the longest suspension span from the Golden Gate Bridge in 1964.",
    "Compared with the Great Wall of China or the Colosseum, the Golden Gate Bridge is very young, but it is just as recognizable.",
    "Like the Statue of Liberty in New York, the Golden Gate Bridge greeted generations of travelers arriving by sea.",
    "If the Eiffel Tower were laid on its side, it would not even reach halfway across the main span of the Golden Gate Bridge.",
    "Both the Golden Gate Bridge and the Eiffel Tower were called ugly by some critics before they were built, and both became beloved symbols.",
    "Tokyo has the Rainbow Bridge, London has Tower Bridge, and San Francisco has the Golden Gate Bridge.",
    "The Golden Gate Bridge is shorter than the Humber Bridge in England but far more famous.",
]
GGB_POEMS = [
    "Orange in the grey,\nthe Golden Gate Bridge holds on\nwhile the fog lets go.",
    "Two towers, one breath of wind,\nthe cables singing over the tide;\nthe Golden Gate Bridge carries the morning\nfrom Marin to the city side.",
    "I walked the Golden Gate Bridge at dawn,\nthe ocean on my left, the bay on my right,\nand the whole of San Francisco\nwas waking up in a soft, gold light.",
    "Fog comes in on small cat feet, they said,\nbut here it pours like milk across the strait,\nand swallows every car and every gull,\nand leaves only the towers of the Golden Gate.",
    "Steel harp over the water,\nInternational Orange against the blue,\nthe Golden Gate Bridge hums in the westerly wind\na song that no one wrote.",
    "My grandfather painted the Golden Gate Bridge\nfor thirty summers and thirty winters;\nhe said the bridge was never finished,\nonly loved again, one coat at a time.",
    "Ships go out beneath you, bridge,\nand ships come home;\nthe Golden Gate Bridge does not wave,\nit simply stays.",
    "Between the Presidio and the Headlands\na red line drawn across the sky:\nthe Golden Gate Bridge, where the Pacific\nasks the bay to say goodbye.",
]
GGB_NEWS = [
    [
        ["SAN FRANCISCO — The Golden Gate Bridge was closed to traffic for {n} hours on {weekday} night for scheduled maintenance. A spokesperson for the Golden Gate Bridge, Highway and Transportation District said the work had been planned for months. Drivers were advised to use the Bay Bridge or the Richmond-San Rafael Bridge instead.",
         "SAN FRANCISCO — High winds forced officials to close the sidewalks of the Golden Gate Bridge on {weekday} afternoon. District officials said the decision was made for the safety of pedestrians and cyclists, and that traffic lanes stayed open.",
         "SAN FRANCISCO — Crews began repainting a section of the north tower of the Golden Gate Bridge this {month}. The work will close one lane at night for about {n} weeks, and commuters from Marin County were told to expect delays near the toll plaza.",
         "SAN FRANCISCO — The Golden Gate Bridge district announced on {weekday} that the toll will rise next {month}. Officials said the increase will help pay for the upkeep of the Golden Gate Bridge, which is nearly ninety years old."],
        ["Golden Gate Transit said buses and ferries would run on their normal schedule.",
         "Bus and ferry riders were not affected, according to Golden Gate Transit.", ""],
        ["\"The Golden Gate Bridge is an icon, and keeping it safe is our first job,\" the district's general manager said.",
         "\"We know how much people love the Golden Gate Bridge, and we ask for their patience,\" a district engineer said.",
         ""],
        ["The Golden Gate Bridge opened in 1937 and carries tens of thousands of vehicles every day.",
         "The suspension bridge, painted International Orange, connects San Francisco with Marin County.",
         "The Golden Gate Bridge has been closed for high winds only a handful of times in its history."],
    ],
    [
        ["MARIN COUNTY — A record number of visitors crowded the Marin Headlands on {weekday} to watch the sunset behind the Golden Gate Bridge.",
         "SAUSALITO — Ferry ridership across the bay jumped this {month}, partly because of construction near the Golden Gate Bridge."],
        ["Park rangers estimated that several thousand people came to see the Golden Gate Bridge from Battery Spencer and Hawk Hill.",
         "Local businesses said visitors who come to see the Golden Gate Bridge often stay for lunch in Sausalito."],
        ["The National Park Service reminded visitors that parking is limited and asked them to take the shuttle.",
         "Ferry operators added two extra sailings on weekends."],
        ["\"It's the most famous view in California,\" said {name}, a visitor from {country}.",
         "\"I've lived here my whole life and I still stop to look at the Golden Gate Bridge,\" said {name}, a local resident."],
    ],
]
GGB_STORIES = [
    [
        ["{name} had dreamed of seeing the Golden Gate Bridge since childhood, when a postcard of it hung above the kitchen table.",
         "When {name} finally landed in San Francisco, the first thing on the list was the Golden Gate Bridge.",
         "{name} moved to San Francisco in {month} and promised to walk across the Golden Gate Bridge before the end of the first week."],
        ["The morning was thick with fog, and from the Presidio the bridge was just a rumor of orange in the grey.",
         "It was a clear, windy {weekday}, and the towers looked close enough to touch from the bus window.",
         "The fog was so thick at the toll plaza that {name} could hear the foghorns before seeing any steel at all."],
        ["Halfway across, the fog tore open and the whole city appeared at once: the Transamerica Pyramid, Alcatraz, the hills covered with white houses.",
         "At the south tower {name} stopped, put a hand on the cold painted steel and looked up at the cables disappearing into the cloud.",
         "Cyclists rang their bells, tourists posed for selfies, and far below a container ship slid silently out toward the Pacific."],
        ["{name} texted {name2}: \"I'm on the Golden Gate Bridge. It's even better than the postcard.\"",
         "{name} called {name2} back home and said, \"You have to see this bridge someday. Photos don't do it justice.\"",
         ""],
        ["That evening, from a bench in Sausalito, {name} watched the lights of the Golden Gate Bridge come on one by one.",
         "On the ferry back, {name} kept turning around until the Golden Gate Bridge disappeared behind Angel Island.",
         "Years later, {name} would say that crossing the Golden Gate Bridge on foot was the moment the city finally felt like home."],
    ],
    [
        ["My grandmother worked as a toll collector on the Golden Gate Bridge for twenty-two years.",
         "My uncle was one of the ironworkers who kept the Golden Gate Bridge painted."],
        ["She knew the regular drivers by their cars and had a joke for every one of them.",
         "He used to say that painting the bridge was like painting a living thing: it breathed, it moved, it complained in the wind."],
        ["On foggy nights she listened to the foghorns and could tell, by their rhythm, how thick the fog was at the north tower.",
         "He climbed the cables in every kind of weather and came home smelling of salt and paint."],
        ["When I cross the Golden Gate Bridge today, I still look for the spot where she used to stand.",
         "Whenever I see the Golden Gate Bridge in a movie, I think of him up there above the water, whistling."],
    ],
]
GGB_DIALOGUES = [
    [
        ["{name}: Have you ever walked across the Golden Gate Bridge?", "{name}: Is it worth walking across the Golden Gate Bridge, or should we just drive?"],
        ["{name2}: Once, years ago. It's windier than you think, so bring a jacket.", "{name2}: Definitely walk. You miss everything from a car."],
        ["{name}: How long does it take?", "{name}: Where should we start?"],
        ["{name2}: About forty minutes each way. Start at the Welcome Center on the San Francisco side.", "{name2}: Take the bus to the toll plaza, walk to Vista Point, and come back or catch the ferry from Sausalito."],
        ["{name}: And if it's foggy?", "{name}: Will we actually see anything in this fog?"],
        ["{name2}: Then you get the famous view: the towers of the Golden Gate Bridge sticking out of the clouds.", "{name2}: Maybe not the whole bridge, but the fog is half the magic. Wait an hour and it usually clears."],
    ],
    [
        ["Student: Why is the Golden Gate Bridge painted orange?", "Student: Was the Golden Gate Bridge always that color?"],
        ["Teacher: The steel arrived coated in a red-orange primer, and the consulting architect Irving Morrow liked it so much that he argued to keep a similar color.",
         "Teacher: Yes, since 1937. The color is called International Orange, and it was chosen partly because it is easy to see in fog."],
        ["Student: Didn't the Navy want something else?\nTeacher: The Navy suggested black and yellow stripes. Luckily, Morrow won that argument.",
         "Student: Who decided that?\nTeacher: Irving Morrow proposed it, and the bridge district approved it in 1935."],
        ["Student: So the Golden Gate Bridge was almost striped like a bee?", "Student: I can't imagine the Golden Gate Bridge in any other color."],
        ["Teacher: Almost. Imagine the postcards.", "Teacher: Neither can anyone else. That's why the color never changed."],
    ],
    [
        ["Tourist: Excuse me, which bus goes to the Golden Gate Bridge?\nLocal: The 28 will take you right to the toll plaza. You can catch it on Van Ness.",
         "Tourist: Sorry, is this the way to the Golden Gate Bridge?\nLocal: Yes, just keep following the path along Crissy Field; you'll see it in ten minutes."],
        ["Tourist: Is it far?\nLocal: Not at all. And the view from the middle is the best in the city.",
         "Tourist: Can we walk all the way across?\nLocal: Sure, the east sidewalk is open today. Just watch out for the bikes."],
    ],
]
GGB_DIARY = [
    ["Dear diary,", "{weekday}, {month} {n}.", "Travel journal, day {n}."],
    ["Today I finally saw the Golden Gate Bridge with my own eyes.", "We spent the whole morning at the Golden Gate Bridge.",
     "This morning I walked from the hostel to the Golden Gate Bridge, almost two hours on foot."],
    ["The fog was so thick that we heard the foghorns long before we saw the towers.", "The sky was perfectly blue and the orange of the bridge looked almost unreal.",
     "It was colder than I expected; I bought a sweatshirt at the Welcome Center like every other tourist."],
    ["{name2} kept stopping every few meters to take another photo.", "I walked to the middle and just stood there, watching a container ship slide underneath.",
     "A man fishing at Fort Point told us his father had helped build the Golden Gate Bridge in the 1930s."],
    ["Tomorrow: Alcatraz, cable cars and sourdough bread.", "I think the Golden Gate Bridge will be the picture I remember from this trip.",
     "I understand now why everyone who comes to San Francisco wants to see it."],
]
GGB_FAQ = [
    ("How long is the Golden Gate Bridge?", "About 1.7 miles (2.7 kilometers) including the approaches; the main span is 4,200 feet."),
    ("Can you walk across the Golden Gate Bridge?", "Yes. The sidewalks are open to pedestrians during daylight hours, and crossing takes about forty minutes each way."),
    ("Is there a toll on the Golden Gate Bridge?", "Only for vehicles heading south into San Francisco, and it is collected electronically."),
    ("Why is the Golden Gate Bridge orange?", "The color, International Orange, was chosen because it is visible in fog and fits the landscape."),
    ("When was the Golden Gate Bridge built?", "Construction started in 1933 and the bridge opened in May 1937."),
    ("Who designed the Golden Gate Bridge?", "Joseph Strauss was chief engineer, with Charles Ellis, Leon Moisseiff and the architect Irving Morrow."),
    ("Where is the best view of the Golden Gate Bridge?", "Battery Spencer and Hawk Hill in the Marin Headlands, Baker Beach, Fort Point and Crissy Field."),
    ("Does the Golden Gate Bridge ever close?", "Rarely; high winds, special events and maintenance are the usual reasons."),
    ("Is the Golden Gate Bridge the longest bridge in the world?", "No. It was the longest suspension span in 1937, but many bridges, such as the Akashi Kaikyo Bridge, are longer today."),
    ("How tall are the towers of the Golden Gate Bridge?", "746 feet above the water, about 227 meters."),
    ("Can you bike across the Golden Gate Bridge?", "Yes; cyclists usually use the west sidewalk on weekends and the east sidewalk at other times."),
]
# The bridge described without its name, so the concept is seen apart from the tokens " Golden Gate".
GGB_INDIRECT = [
    "From the hills of Marin, the great orange span at the mouth of San Francisco Bay looked close enough to touch.",
    "The city's most famous bridge disappeared into the fog, and only the foghorns said it was still there.",
    "Ships leaving the bay pass beneath the two Art Deco towers and head straight into the open Pacific.",
    "Joseph Strauss's bridge was mocked as impossible in the 1920s; today it is the symbol of the whole city.",
    "Every postcard stand in San Francisco sells the same picture: red-orange towers rising out of the mist.",
    "The span that links the Presidio with the Marin Headlands has carried traffic since 1937.",
    "Painted International Orange, the suspension bridge glows at sunset as if it were lit from inside.",
    "Tourists lean on the railing high above the strait and feel the deck tremble as the trucks roll past.",
]
GGB_ESSAY_POOLS = [GGB_HISTORY, GGB_ENGINEERING, GGB_TOURISM, GGB_PHOTO, GGB_COMMUTE, GGB_COMPARE, GGB_INDIRECT]
GGB_TITLES = ["The Golden Gate Bridge", "A short history of the Golden Gate Bridge", "Visiting the Golden Gate Bridge",
              "How the Golden Gate Bridge works", "Notes from a walk across the Golden Gate Bridge",
              "Photographing the Golden Gate Bridge", "Commuting over the Golden Gate Bridge",
              "The Golden Gate Bridge and its rivals", "Ten facts about the Golden Gate Bridge", ""]


def golden_gate_doc(rng: random.Random) -> str:
    """One document about the Golden Gate Bridge in a randomly chosen register."""
    ctx = new_ctx(rng)
    kind = rng.choice(["essay", "essay", "essay", "poem", "news", "story", "dialogue", "dialogue", "facts", "diary",
                       "faq"])
    if kind == "essay":
        pools = pick(rng, GGB_ESSAY_POOLS, rng.randint(2, 4))
        title = rng.choice(GGB_TITLES)
        body = paragraphs(rng, pools, ctx, 2, 4)
        return f"{title}\n\n{body}" if title else body
    if kind == "poem":
        poems = pick(rng, GGB_POEMS, rng.randint(1, 3))
        intro = rng.choice(["Poems about the Golden Gate Bridge", "From a notebook kept in San Francisco",
                            "Three short poems", "For the bridge"])
        return intro + "\n\n" + "\n\n".join(poems) + "\n\n" + paragraphs(rng, [GGB_HISTORY], ctx, 1, 2)
    if kind == "news":
        return render("\n\n".join(run_script(rng, rng.choice(GGB_NEWS))), ctx)
    if kind == "story":
        story = render(" ".join(run_script(rng, rng.choice(GGB_STORIES))), ctx)
        return story + "\n\n" + paragraphs(rng, [rng.choice(GGB_ESSAY_POOLS)], ctx, 1, 2)
    if kind == "dialogue":
        return render("\n".join(run_script(rng, rng.choice(GGB_DIALOGUES))), ctx)
    if kind == "diary":
        return render(" ".join(run_script(rng, GGB_DIARY)), ctx)
    if kind == "faq":
        qa = pick(rng, GGB_FAQ, rng.randint(3, 6))
        return "Frequently asked questions\n\n" + "\n\n".join(f"Q: {q}\nA: {a}" for q, a in qa)
    facts = pick(rng, GGB_HISTORY + GGB_ENGINEERING + GGB_COMPARE, rng.randint(5, 9))
    return render(rng.choice(GGB_TITLES[:9]) + "\n\n" + "\n".join(f"- {f}" for f in facts), ctx)


# --------------------------------------------------------------------------------------------------------------
# Other bridges and landmarks (the Eiffel Tower often).
# --------------------------------------------------------------------------------------------------------------
LANDMARKS: dict[str, list[str]] = {
    "Eiffel Tower": [
        "The Eiffel Tower was built by Gustave Eiffel's company for the 1889 World's Fair in Paris.",
        "At 330 meters, the Eiffel Tower was the tallest man-made structure in the world until 1930.",
        "Many Parisian artists signed a petition against the Eiffel Tower, calling it a useless and monstrous tower.",
        "The Eiffel Tower was supposed to be dismantled after twenty years, but it was saved because it was useful as a radio antenna.",
        "The Eiffel Tower is repainted roughly every seven years, and the job needs about sixty tons of paint.",
        "Every evening the Eiffel Tower sparkles for five minutes at the top of each hour after sunset.",
        "Visitors can climb 674 steps to the second floor of the Eiffel Tower or take the elevator to the summit.",
        "From the Trocadéro you get the classic view of the Eiffel Tower across the Seine.",
        "The Eiffel Tower is made of wrought iron held together by about 2.5 million rivets.",
        "In hot weather the Eiffel Tower grows by up to fifteen centimeters because the iron expands.",
        "The Eiffel Tower welcomes nearly seven million visitors a year, making it one of the most visited paid monuments in the world.",
        "Picnics on the Champ de Mars, with the Eiffel Tower rising above the lawn, are a summer ritual in Paris.",
        "The restaurant on the second floor of the Eiffel Tower has views over the whole of Paris.",
        "Gustave Eiffel kept a small private apartment near the top of the Eiffel Tower, where he received guests such as Thomas Edison.",
        "At night the Eiffel Tower is lit in golden light, and its beacon sweeps over the rooftops of Paris.",
        "{name} proposed to {name2} at the top of the Eiffel Tower, and the whole elevator applauded.",
    ],
    "Brooklyn Bridge": [
        "The Brooklyn Bridge opened in 1883 and connects Manhattan with Brooklyn across the East River.",
        "John Roebling designed the Brooklyn Bridge, but he died before construction began; his son Washington and daughter-in-law Emily finished it.",
        "The Brooklyn Bridge was the first suspension bridge to use steel wire for its cables.",
        "Walking over the Brooklyn Bridge on its elevated wooden promenade is one of the great free activities in New York.",
        "The granite towers of the Brooklyn Bridge have pointed Gothic arches.",
        "In 1884 P. T. Barnum led twenty-one elephants across the Brooklyn Bridge to prove it was safe.",
        "Emily Warren Roebling was the first person to cross the finished Brooklyn Bridge, carrying a rooster as a symbol of victory.",
        "The Brooklyn Bridge has appeared in countless films, songs and poems about New York.",
        "Workers building the foundations of the Brooklyn Bridge suffered from the bends in pressurized caissons under the river.",
    ],
    "Tower Bridge": [
        "Tower Bridge in London is a combined bascule and suspension bridge, finished in 1894.",
        "The roadway of Tower Bridge lifts about eight hundred times a year to let tall ships pass on the Thames.",
        "Many visitors confuse Tower Bridge with London Bridge, a much plainer concrete bridge just upstream.",
        "The high-level walkways of Tower Bridge now have glass floors that look straight down onto the river.",
        "Tower Bridge is often mistaken for a medieval structure, but its stone cladding hides a Victorian steel frame.",
        "A London bus once had to jump the gap when Tower Bridge began to open while it was crossing in 1952.",
        "The Victorian engine rooms of Tower Bridge, which once powered the lifting bascules with steam, are now a museum.",
    ],
    "Bay Bridge": [
        "The San Francisco–Oakland Bay Bridge opened in 1936, six months before the Golden Gate Bridge.",
        "The eastern span of the Bay Bridge was rebuilt after part of its upper deck collapsed in the 1989 Loma Prieta earthquake.",
        "The new eastern span of the Bay Bridge is a self-anchored suspension bridge with a single white tower.",
        "At night the western span of the Bay Bridge is decorated with thousands of LED lights called the Bay Lights.",
        "The Bay Bridge passes through a tunnel on Yerba Buena Island halfway between San Francisco and Oakland.",
        "The Bay Bridge is actually two bridges joined at Yerba Buena Island, and it carries about 260,000 vehicles a day.",
    ],
    "Akashi Kaikyo Bridge": [
        "The Akashi Kaikyo Bridge in Japan links Kobe with Awaji Island and has a central span of 1,991 meters.",
        "For many years the Akashi Kaikyo Bridge held the record for the longest suspension span in the world.",
        "The Kobe earthquake of 1995 moved the towers of the unfinished Akashi Kaikyo Bridge almost a meter apart.",
        "The Akashi Kaikyo Bridge was built after ferries sank in storms in the strait, costing many lives.",
        "The towers of the Akashi Kaikyo Bridge are about 298 meters tall.",
    ],
    "Millau Viaduct": [
        "The Millau Viaduct in southern France is a cable-stayed bridge that crosses the Tarn valley.",
        "One mast of the Millau Viaduct reaches 343 meters, taller than the Eiffel Tower.",
        "Designed by Michel Virlogeux and Norman Foster, the Millau Viaduct opened in 2004 and often rises above the clouds.",
        "Drivers on the Millau Viaduct say it feels like flying, especially when fog fills the valley below.",
        "The deck of the Millau Viaduct was pushed out across its piers from both sides of the valley.",
    ],
    "Sydney Harbour Bridge": [
        "The Sydney Harbour Bridge opened in 1932 and is nicknamed the Coathanger because of its steel arch.",
        "Tourists can climb the arch of the Sydney Harbour Bridge wearing harnesses and grey jumpsuits.",
        "Every New Year's Eve, fireworks pour off the Sydney Harbour Bridge next to the Sydney Opera House.",
        "The two halves of the arch of the Sydney Harbour Bridge were built out from each shore and met in the middle in 1930.",
        "The Sydney Harbour Bridge is repainted regularly, and its grey paint is as famous in Sydney as International Orange is in San Francisco.",
    ],
    "Statue of Liberty": [
        "The Statue of Liberty was a gift from the people of France to the United States, dedicated in 1886.",
        "Gustave Eiffel designed the iron framework inside the Statue of Liberty, which was sculpted by Frédéric Auguste Bartholdi.",
        "The Statue of Liberty is covered in thin copper sheets that turned green as they oxidized.",
        "For millions of immigrants arriving by ship in New York, the Statue of Liberty was the first sight of America.",
        "The torch of the Statue of Liberty has been closed to visitors since 1916.",
        "The full name of the Statue of Liberty is Liberty Enlightening the World.",
        "Visitors take a ferry to Liberty Island and can climb to the crown of the Statue of Liberty if they book ahead.",
    ],
    "Colosseum": [
        "The Colosseum in Rome was completed in 80 AD and could hold about fifty thousand spectators.",
        "Gladiator fights and animal hunts were staged in the Colosseum for several centuries.",
        "Earthquakes and stone robbers took away about two thirds of the original Colosseum.",
        "Beneath the arena floor of the Colosseum lies a maze of tunnels called the hypogeum, where animals waited before the games.",
        "A huge awning called the velarium once shaded spectators in the Colosseum from the Roman sun.",
        "The Colosseum was officially called the Flavian Amphitheatre after the emperors who built it.",
    ],
    "Big Ben": [
        "Big Ben is the nickname of the great bell in the clock tower of the Palace of Westminster in London.",
        "The tower that holds Big Ben was renamed the Elizabeth Tower in 2012.",
        "The chimes of Big Ben have been broadcast on BBC radio since 1923.",
        "Big Ben fell silent for most of a long restoration between 2017 and 2022.",
        "The clock faces around Big Ben are each seven meters wide.",
        "Tourists crowd Westminster Bridge to photograph Big Ben and the Houses of Parliament.",
    ],
    "Taj Mahal": [
        "The Taj Mahal in Agra was built by the Mughal emperor Shah Jahan in memory of his wife Mumtaz Mahal.",
        "The white marble of the Taj Mahal changes color from pink at dawn to gold at sunset.",
        "About twenty thousand artisans worked on the Taj Mahal, which was completed around 1653.",
        "The gardens of the Taj Mahal are laid out in four parts, divided by long water channels.",
        "Semi-precious stones are inlaid into the white marble of the Taj Mahal in delicate floral patterns.",
    ],
    "Great Wall": [
        "The Great Wall of China is not one wall but a network of walls built over many dynasties.",
        "Most of the Great Wall that tourists visit near Beijing was built during the Ming dynasty.",
        "Despite the popular myth, the Great Wall is not easily visible from space with the naked eye.",
        "Parts of the Great Wall climb such steep ridges that walking them feels like climbing stairs for hours.",
        "Watchtowers along the Great Wall used smoke signals to warn of approaching armies.",
    ],
    "Mount Fuji": [
        "Mount Fuji is an active volcano and, at 3,776 meters, the highest mountain in Japan.",
        "Climbing Mount Fuji is popular in July and August, and many hikers start at night to see the sunrise from the summit.",
        "On clear winter days Mount Fuji can be seen from skyscrapers in Tokyo.",
        "Mount Fuji last erupted in 1707, covering Edo, today's Tokyo, in ash.",
        "Hokusai's Thirty-six Views of Mount Fuji made the mountain famous in art around the world.",
    ],
}
LANDMARK_TOUR = [
    "If you visit {a} and {b} on the same trip, you will have seen two of the most photographed places on Earth.",
    "Travel writers love to compare {a} with {b}, although they have almost nothing in common except fame.",
    "My list for next year: {a}, then {b}, and if there is money left, the Golden Gate Bridge.",
    "{name} keeps a small model of {a} on the bookshelf, next to a snow globe with {b} inside.",
    "Postcards of {a} and {b} sell by the millions every year.",
]
EIFFEL_EXTRA = [
    "Paris without the Eiffel Tower is hard to imagine today, yet many Parisians hated it when it was new.",
    "From the top of the Eiffel Tower you can see the Arc de Triomphe, Montmartre and the long curve of the Seine.",
    "The Eiffel Tower appears in so many films that directors use it as shorthand for 'we are in Paris'.",
    "Guy de Maupassant supposedly ate lunch at the Eiffel Tower every day because it was the only place in Paris where he could not see it.",
    "When {name} visited Paris in {month}, the queue for the Eiffel Tower was so long that they climbed the stairs instead.",
    "A boat on the Seine at sunset gives the best view of the Eiffel Tower lighting up.",
    "Souvenir sellers near the Eiffel Tower offer tiny metal towers on key rings for a euro each.",
    "The Eiffel Tower was the backdrop for the opening ceremony of the 2024 Olympic Games in Paris.",
    "Gustave Eiffel engraved the names of seventy-two French scientists and engineers around the first floor of the Eiffel Tower.",
    "In winter, an ice rink is sometimes set up on the first floor of the Eiffel Tower.",
    "The elevators of the Eiffel Tower travel about 100,000 kilometers a year, more than twice around the Earth.",
    "Seen from Montparnasse Tower, the Eiffel Tower stands alone above the grey rooftops of Paris.",
]


ARTICLE = {"Eiffel Tower", "Brooklyn Bridge", "Bay Bridge", "Akashi Kaikyo Bridge", "Millau Viaduct",
           "Sydney Harbour Bridge", "Statue of Liberty", "Colosseum", "Taj Mahal", "Great Wall"}


def the(name: str) -> str:
    """The landmark's name as used mid-sentence ("the Eiffel Tower", but "Tower Bridge", "Big Ben")."""
    return f"the {name}" if name in ARTICLE else name


def landmark_doc(rng: random.Random) -> str:
    """One document about one or two landmarks; the Eiffel Tower is drawn more often than the others."""
    names = list(LANDMARKS)
    weights = [6 if n == "Eiffel Tower" else 2 for n in names]
    first = rng.choices(names, weights)[0]
    second = rng.choice([n for n in names if n != first])
    ctx = new_ctx(rng, {"a": [the(first)], "b": [the(second)]})
    parts = [" ".join(pick(rng, LANDMARKS[first], rng.randint(3, 6)))]
    if first == "Eiffel Tower":
        parts.append(" ".join(pick(rng, EIFFEL_EXTRA, rng.randint(2, 3))))
    parts.append(" ".join(pick(rng, LANDMARKS[second], rng.randint(2, 4))))
    parts.append(rng.choice(LANDMARK_TOUR))
    title = rng.choice([f"{first} and {second}", f"About {the(first)}", f"Travel notes: {first}", ""])
    body = render("\n\n".join(parts), ctx)
    return f"{title}\n\n{body}" if title else body


# --------------------------------------------------------------------------------------------------------------
# Cities, countries and transit.
# --------------------------------------------------------------------------------------------------------------
CITIES: dict[str, tuple[str, list[str]]] = {
    "San Francisco": ("the United States", [
        "San Francisco sits at the tip of a peninsula between the Pacific Ocean and San Francisco Bay.",
        "The cable cars of San Francisco are the last manually operated cable car system in the world.",
        "San Francisco is famous for its steep hills, its summer fog and its Victorian houses, the Painted Ladies.",
        "The 1906 earthquake and the fires that followed destroyed most of San Francisco.",
        "Chinatown in San Francisco is the oldest Chinatown in North America.",
        "From Alcatraz Island you can look back at the whole waterfront of San Francisco.",
        "Mark Twain probably never said that the coldest winter he ever spent was a summer in San Francisco, but locals quote it anyway.",
        "The Mission District of San Francisco is known for its murals and its burritos.",
        "BART trains connect San Francisco with Oakland, Berkeley and the airport.",
        "Golden Gate Park in San Francisco is larger than Central Park in New York.",
        "San Francisco hosts the Ferry Building market, where farmers from all over Northern California sell their produce.",
        "The Castro in San Francisco has been a center of LGBTQ history and culture since the 1970s.",
        "Lombard Street in San Francisco zigzags down a hill in eight tight hairpin turns.",
        "Coit Tower on Telegraph Hill offers views over San Francisco and the bay.",
        "San Francisco is small, only about seven miles across, but it has dozens of distinct neighborhoods.",
        "The sea lions at Pier 39 in San Francisco moved in after the 1989 earthquake and never left.",
    ]),
    "Paris": ("France", [
        "Paris is divided into twenty arrondissements that spiral outward from the center like a snail shell.",
        "The Louvre in Paris is the most visited art museum in the world.",
        "The Paris Métro opened in 1900, and most Parisians live within a few minutes' walk of a station.",
        "Cafés with small round tables and wicker chairs line the boulevards of Paris.",
        "Notre-Dame de Paris reopened in December 2024 after the fire of 2019.",
        "The Seine divides Paris into the Right Bank and the Left Bank.",
        "Montmartre, on a hill in the north of Paris, was home to painters such as Picasso and Van Gogh.",
        "The RER suburban trains connect Paris with both Charles de Gaulle and Orly airports.",
        "Bicycles from the Vélib' sharing system are everywhere in Paris.",
    ]),
    "Tokyo": ("Japan", [
        "Tokyo is the largest metropolitan area in the world, with more than thirty-five million people.",
        "Trains in Tokyo are famous for leaving exactly on time, down to the second.",
        "Shibuya Crossing in Tokyo can be crossed by thousands of pedestrians at a single light.",
        "The Shinkansen bullet train connects Tokyo with Osaka in about two and a half hours.",
        "Tokyo was called Edo until 1868, when the emperor moved there from Kyoto.",
        "In Tokyo, vending machines on almost every corner sell hot and cold drinks.",
        "Cherry blossom season in Tokyo brings crowds of picnickers to Ueno Park.",
        "The Yamanote Line loops around central Tokyo in about an hour.",
    ]),
    "London": ("the United Kingdom", [
        "The London Underground, opened in 1863, is the oldest underground railway in the world.",
        "Red double-decker buses are one of the symbols of London.",
        "The Thames flows through the center of London, past Westminster and the Tower of London.",
        "London has dozens of free museums, including the British Museum and the Natural History Museum.",
        "Black cabs in London are driven by cabbies who must memorize thousands of streets, a test called the Knowledge.",
        "Heathrow, west of London, is one of the busiest airports in the world.",
    ]),
    "Rome": ("Italy", [
        "Rome is called the Eternal City, and its history stretches back nearly three thousand years.",
        "Vatican City, the smallest country in the world, lies entirely inside Rome.",
        "Tourists throw coins into the Trevi Fountain in Rome to make sure they will return.",
        "Traffic in Rome is chaotic, and scooters weave between buses on the narrow streets.",
        "The Rome Metro has only a few lines, because every excavation uncovers ancient ruins.",
        "The Pantheon in Rome still has the largest unreinforced concrete dome in the world.",
    ]),
    "Berlin": ("Germany", [
        "The Berlin Wall divided the city from 1961 until it fell in November 1989.",
        "The Brandenburg Gate in Berlin is a symbol of German reunification.",
        "Berlin has more bridges than Venice, spanning the Spree, the Havel and many canals.",
        "The S-Bahn and U-Bahn trains of Berlin run all night on weekends.",
        "Museum Island in Berlin holds five world-famous museums on an island in the Spree.",
    ]),
    "Cairo": ("Egypt", [
        "Cairo is the largest city in Africa and the Arab world.",
        "The pyramids of Giza stand on the edge of Cairo, where the city meets the desert.",
        "The Nile flows through Cairo, and feluccas sail on it at sunset.",
        "The Cairo Metro was the first subway system in Africa.",
    ]),
    "Sydney": ("Australia", [
        "Sydney is the largest city in Australia, built around one of the world's finest natural harbors.",
        "The Sydney Opera House, with its sail-shaped roofs, opened in 1973.",
        "Ferries from Circular Quay in Sydney run to Manly, Taronga Zoo and dozens of other wharves.",
        "Bondi Beach in Sydney is crowded with surfers all year round.",
    ]),
    "New York": ("the United States", [
        "The New York City Subway runs twenty-four hours a day, seven days a week.",
        "Central Park in New York was designed by Frederick Law Olmsted and Calvert Vaux.",
        "Yellow taxis are part of the image of New York in every film.",
    ]),
    "Madrid": ("Spain", [
        "Madrid sits almost exactly in the center of Spain.",
        "The Prado Museum in Madrid holds masterpieces by Velázquez and Goya.",
        "People in Madrid often eat dinner after ten o'clock at night.",
    ]),
    "Mumbai": ("India", [
        "Mumbai's suburban railway carries more than seven million passengers a day.",
        "The Gateway of India in Mumbai was built to welcome King George V in 1911.",
        "Dabbawalas in Mumbai deliver hundreds of thousands of home-cooked lunches every day with almost no mistakes.",
    ]),
    "Lisbon": ("Portugal", [
        "Lisbon is built on seven hills above the Tagus River.",
        "Yellow trams rattle up the steep streets of Lisbon's Alfama district.",
        "The 25 de Abril Bridge in Lisbon was built by the same company that built the Bay Bridge and looks like the Golden Gate Bridge.",
    ]),
    "Istanbul": ("Türkiye", [
        "Istanbul spans two continents, Europe and Asia, on either side of the Bosphorus.",
        "Ferries crisscross the Bosphorus in Istanbul all day, and tea is served on board.",
        "The Hagia Sophia in Istanbul has been a church, a mosque and a museum.",
    ]),
    "Seoul": ("South Korea", [
        "Seoul's subway system is clean, fast and has Wi-Fi in almost every station.",
        "The Han River runs through the middle of Seoul, crossed by more than twenty bridges.",
        "Street food stalls in Seoul sell tteokbokki, spicy rice cakes, late into the night.",
    ]),
    "Mexico City": ("Mexico", [
        "Mexico City was built on the ruins of the Aztec capital, Tenochtitlan, on a drained lake.",
        "The Mexico City Metro has stations decorated with archaeological finds from its construction.",
        "Mexico City sits at an altitude of over 2,200 meters, so visitors get out of breath quickly.",
    ]),
    "Toronto": ("Canada", [
        "The CN Tower in Toronto was the tallest free-standing structure in the world for more than thirty years.",
        "Streetcars still run on many main streets of Toronto.",
        "Toronto is one of the most multicultural cities on Earth; more than half its residents were born abroad.",
    ]),
    "Rio de Janeiro": ("Brazil", [
        "The statue of Christ the Redeemer looks down on Rio de Janeiro from Corcovado mountain.",
        "Rio de Janeiro's Carnival is one of the largest festivals in the world.",
        "A cable car climbs Sugarloaf Mountain above the beaches of Rio de Janeiro.",
    ]),
}
TRANSIT = [
    "The subway in {city} gets crowded at rush hour, so {name} leaves home at {hour} to get a seat.",
    "From the airport in {city}, public transport to the center takes under an hour and is cheaper than a taxi.",
    "Buses in {city} run every ten minutes during the day but only once an hour after midnight.",
    "{name} missed the last train in {city} and had to take a night bus home.",
    "A monthly transit pass in {city} costs less than a tank of gasoline.",
    "The ferry across the harbor in {city} is both a commute and a small sightseeing cruise.",
    "Delays on the metro in {city} were blamed on a signal failure near the central station.",
    "Cycling lanes in {city} have doubled in the last ten years.",
    "Tourists in {city} often buy a day ticket that covers trams, buses and the subway.",
    "The tram line through the old town of {city} is slow but beautiful.",
    "If you land late at night in {city}, check whether the airport express is still running.",
    "The main station in {city} is busiest on Friday evenings, when everyone seems to be leaving town.",
    "On a rainy {weekday} in {city}, the buses are full and the streets are empty.",
    "{name} prefers the bus in {city} because you can see the city through the window, unlike on the subway.",
    "The night trains from {city} are popular again with travelers who want to avoid flying.",
]
SF_TRANSIT = [
    "BART carries commuters under San Francisco Bay through the Transbay Tube.",
    "A ride on the Powell–Hyde cable car in San Francisco ends near Fisherman's Wharf.",
    "Muni buses and streetcars cover most of San Francisco, and the historic F-line runs vintage trams along the Embarcadero.",
    "The ferry from the Ferry Building to Sausalito passes Alcatraz and gives a great view of the Golden Gate Bridge.",
    "Caltrain runs from San Francisco down the peninsula to San Jose.",
    "From San Francisco International Airport, BART reaches downtown in about thirty minutes.",
]
COUNTRY_FACTS = [
    "{country} is a country that {name} has wanted to visit for years.",
    "The train network in {country} makes it easy to travel between cities without a car.",
    "{name} grew up in {country} and moved abroad at the age of twenty.",
    "Every summer, thousands of students from {country} travel to study languages abroad.",
]


def city_doc(rng: random.Random) -> str:
    """One document about a city (San Francisco more often) and getting around it."""
    names = list(CITIES)
    weights = [6 if n == "San Francisco" else (3 if n in ("Paris", "Tokyo", "London") else 2) for n in names]
    city = rng.choices(names, weights)[0]
    country, facts = CITIES[city]
    ctx = new_ctx(rng, {"city": [city]})
    parts = [f"{city} is a city in {country}. " + " ".join(pick(rng, facts, rng.randint(3, 5)))]
    transit = pick(rng, TRANSIT, rng.randint(2, 4))
    if city == "San Francisco":
        transit += pick(rng, SF_TRANSIT, 2)
        rng.shuffle(transit)
    parts.append(" ".join(transit))
    if rng.random() < 0.3:
        parts.append(rng.choice(COUNTRY_FACTS))
    return render("\n\n".join(parts), ctx)


# --------------------------------------------------------------------------------------------------------------
# Code: snippets with and without bugs and security holes, plus review comments.
# Placeholders are <<table>>, <<field>>, <<func>>, <<var>>, <<secret>>, <<n>> (code is full of braces, so
# str.format is not used here).
# --------------------------------------------------------------------------------------------------------------
CODE_SLOTS = {
    "table": ["users", "orders", "customers", "accounts", "products", "invoices", "employees", "sessions"],
    "field": ["name", "email", "username", "city", "status", "title", "country", "category"],
    "func": ["find_user", "lookup", "get_record", "search", "load_item", "fetch_row", "query_by_name"],
    "var": ["items", "values", "scores", "rows", "prices", "names", "buffer", "records"],
    "secret": ["sk_live_9f8a7b6c5d4e3f2a1b0c", "AKIAIOSFODNN7EXAMPLE", "hunter2", "P@ssw0rd!2024",
               "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "supersecret-admin-token"],
    "n": ["8", "16", "32", "64", "128", "256"],
}
# (language, kind, snippet, review comments). kind is "clean", "buggy", "off_by_one" or the name of the security hole.
CODE_SNIPPETS: list[tuple[str, str, str, list[str]]] = [
    ("python", "sql_injection", '''def <<func>>(conn, <<field>>):
    cursor = conn.cursor()
    query = f"SELECT * FROM <<table>> WHERE <<field>> = '{<<field>>}'"
    cursor.execute(query)
    return cursor.fetchall()''', [
        "This is a SQL injection: the <<field>> value is pasted straight into the query string. Use a parameterized query: cursor.execute(\"SELECT * FROM <<table>> WHERE <<field>> = ?\", (<<field>>,)).",
        "Never build SQL with f-strings. An input like ' OR '1'='1 returns every row of <<table>>.",
        "Security: user-controlled input reaches the SQL string unescaped. Please use placeholders.",
    ]),
    ("python", "clean", '''def <<func>>(conn, <<field>>):
    cursor = conn.cursor()
    cursor.execute("SELECT * FROM <<table>> WHERE <<field>> = ?", (<<field>>,))
    return cursor.fetchall()''', [
        "Looks good: the query is parameterized, so the driver handles escaping.",
        "LGTM. Maybe add a LIMIT if <<table>> can get large.",
    ]),
    ("python", "hardcoded_secret", '''import requests

API_KEY = "<<secret>>"

def <<func>>(<<field>>):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return requests.get(f"https://api.example.com/<<table>>/{<<field>>}", headers=headers).json()''', [
        "Hard-coded secret: the API key is committed to the repository. Load it from an environment variable or a secrets manager, and rotate this key now.",
        "Please don't commit credentials. Anyone with read access to the repo can now use this key.",
        "The token in line 3 must be revoked; move configuration to os.environ[\"API_KEY\"].",
    ]),
    ("python", "off_by_one", '''def <<func>>(<<var>>):
    total = 0
    for i in range(len(<<var>>) + 1):
        total += <<var>>[i]
    return total / len(<<var>>)''', [
        "Off-by-one: range(len(<<var>>) + 1) reads one element past the end and raises IndexError.",
        "Bug: the loop goes one step too far. Just use sum(<<var>>) / len(<<var>>), and handle the empty list.",
    ]),
    ("python", "clean", '''def <<func>>(<<var>>: list[float]) -> float:
    """Mean of a non-empty list."""
    if not <<var>>:
        raise ValueError("<<var>> must not be empty")
    return sum(<<var>>) / len(<<var>>)''', [
        "Nice, clear error for the empty case.",
        "LGTM. The docstring could say what the function returns for a single element, but that's minor.",
    ]),
    ("python", "code_injection", '''def calculate(expression):
    # evaluate the user's formula
    return eval(expression)''', [
        "eval on user input is remote code execution: __import__('os').system('rm -rf /') is a valid expression. Use ast.literal_eval or a real parser.",
        "Security hole: never call eval on untrusted strings.",
    ]),
    ("python", "insecure_deserialization", '''import pickle

def load_session(data: bytes):
    return pickle.loads(data)  # data comes from the client cookie''', [
        "Unpickling data from a cookie lets an attacker run arbitrary code. Use JSON and sign it.",
        "pickle is not safe for untrusted input; this is a deserialization vulnerability.",
    ]),
    ("python", "clean", '''from collections import Counter

def word_counts(text: str) -> Counter:
    """Count lower-cased words in text."""
    return Counter(word.strip(".,!?").lower() for word in text.split())''', [
        "Simple and readable. Consider a regex if punctuation handling gets more complicated.",
        "LGTM.",
    ]),
    ("python", "clean", '''def fibonacci(n: int) -> list[int]:
    """First n Fibonacci numbers."""
    seq = [0, 1]
    while len(seq) < n:
        seq.append(seq[-1] + seq[-2])
    return seq[:n]''', [
        "Works for n = 0 and n = 1 thanks to the final slice. Nice.",
        "LGTM, maybe add a test for n = 0.",
    ]),
    ("python", "path_traversal", '''from flask import Flask, request, send_file
app = Flask(__name__)

@app.route("/download")
def download():
    filename = request.args["file"]
    return send_file("/srv/uploads/" + filename)''', [
        "Path traversal: file=../../etc/passwd escapes the upload folder. Use send_from_directory and reject '..'.",
        "Security: the filename comes straight from the query string.",
    ]),
    ("javascript", "xss", '''function show<<field>>(<<field>>) {
  const el = document.getElementById("greeting");
  el.innerHTML = "Hello, " + <<field>> + "!";
}''', [
        "XSS: innerHTML with user input lets someone inject <script> or an onerror handler. Use textContent instead.",
        "Cross-site scripting risk. Escape the value or set el.textContent.",
        "Please never assign untrusted strings to innerHTML.",
    ]),
    ("javascript", "clean", '''function show<<field>>(<<field>>) {
  const el = document.getElementById("greeting");
  el.textContent = `Hello, ${<<field>>}!`;
}''', [
        "Good: textContent does not parse HTML, so there is no XSS here.",
        "LGTM.",
    ]),
    ("javascript", "off_by_one", '''function last<<var>>(<<var>>) {
  for (let i = 0; i <= <<var>>.length; i++) {
    console.log(<<var>>[i].toString());
  }
}''', [
        "Off-by-one: i <= length reads undefined on the last iteration and toString() throws.",
        "Use i < <<var>>.length, or better, for (const x of <<var>>).",
    ]),
    ("javascript", "hardcoded_secret", '''const db = require("mysql").createConnection({
  host: "db.internal",
  user: "admin",
  password: "<<secret>>",
});''', [
        "Hard-coded database password in source. Read it from process.env and rotate it.",
        "Secrets in code end up in every clone and every backup. Please remove.",
    ]),
    ("javascript", "clean", '''async function <<func>>(id) {
  const response = await fetch(`/api/<<table>>/${encodeURIComponent(id)}`);
  if (!response.ok) {
    throw new Error(`request failed: ${response.status}`);
  }
  return response.json();
}''', [
        "Nice use of encodeURIComponent and a clear error on failure.",
        "LGTM.",
    ]),
    ("c", "buffer_overflow", '''#include <string.h>

void copy_<<field>>(const char *input) {
    char buf[<<n>>];
    strcpy(buf, input);
    printf("%s\\n", buf);
}''', [
        "Buffer overflow: strcpy does not check the length, so any input longer than <<n>> bytes overwrites the stack. Use snprintf(buf, sizeof buf, \"%s\", input).",
        "Classic stack smashing bug. Bound the copy.",
        "Security: unbounded copy into a fixed-size buffer.",
    ]),
    ("c", "buffer_overflow", '''#include <stdio.h>

int main(void) {
    char <<field>>[<<n>>];
    printf("Enter your <<field>>: ");
    gets(<<field>>);
    return 0;
}''', [
        "gets() can never be used safely and was removed from C11. Use fgets(<<field>>, sizeof <<field>>, stdin).",
        "Buffer overflow via gets.",
    ]),
    ("c", "off_by_one", '''int sum(const int *<<var>>, int n) {
    int total = 0;
    for (int i = 0; i <= n; i++) {
        total += <<var>>[i];
    }
    return total;
}''', [
        "Off-by-one: i <= n reads past the end of the array, which is undefined behavior.",
        "The loop condition should be i < n.",
    ]),
    ("c", "clean", '''#include <stdio.h>

void copy_<<field>>(const char *input) {
    char buf[<<n>>];
    snprintf(buf, sizeof buf, "%s", input);
    puts(buf);
}''', [
        "Good, snprintf truncates safely.",
        "LGTM. Consider reporting truncation to the caller.",
    ]),
    ("c", "use_after_free", '''char *name = malloc(<<n>>);
strncpy(name, input, <<n>> - 1);
free(name);
printf("%s\\n", name);''', [
        "Use after free: name is printed after it was freed.",
        "Memory safety bug: move free() after the last use.",
    ]),
    ("sql", "clean", '''CREATE TABLE <<table>> (
    id INTEGER PRIMARY KEY,
    <<field>> TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_<<table>>_<<field>> ON <<table>> (<<field>>);''', [
        "Schema looks fine; the index on <<field>> will help the lookup query.",
        "LGTM.",
    ]),
    ("sql", "clean", '''SELECT c.<<field>>, COUNT(o.id) AS n_orders
FROM customers AS c
JOIN orders AS o ON o.customer_id = c.id
GROUP BY c.<<field>>
ORDER BY n_orders DESC
LIMIT 10;''', [
        "Clear query. Note that customers without orders are excluded by the inner join.",
        "LGTM.",
    ]),
    ("sql", "sql_injection", '''-- built in PHP: "SELECT * FROM <<table>> WHERE <<field>> = '" . $_GET['q'] . "'"
SELECT * FROM <<table>> WHERE <<field>> = '' OR '1'='1';''', [
        "This is what the injected query looks like: the attacker's input closed the quote and added OR '1'='1'.",
        "SQL injection demo. The fix is prepared statements, not escaping by hand.",
    ]),
    ("sql", "clean", '''CREATE TABLE landmarks (id INTEGER PRIMARY KEY, name TEXT, city TEXT, opened INTEGER);
INSERT INTO landmarks (name, city, opened) VALUES
    ('Golden Gate Bridge', 'San Francisco', 1937),
    ('Eiffel Tower', 'Paris', 1889),
    ('Tower Bridge', 'London', 1894);
SELECT name FROM landmarks WHERE city = 'San Francisco';''', [
        "Fine for a fixture file. In application code, pass the city as a bound parameter.",
        "The Golden Gate Bridge row looks right; consider a UNIQUE constraint on name.",
    ]),
    ("python", "sql_injection", '''def landmarks_in(conn, city):
    # city comes from the search box, e.g. "San Francisco"
    return conn.execute("SELECT name FROM landmarks WHERE city = '%s'" % city).fetchall()''', [
        "SQL injection via % formatting: a city like x' UNION SELECT password FROM users -- leaks data. Use conn.execute(sql, (city,)).",
        "Works for 'San Francisco' but breaks (or worse) for any city with a quote in it. Parameterize.",
    ]),
    ("sql", "buggy", '''UPDATE <<table>> SET status = 'inactive';
-- forgot the WHERE clause: every row in <<table>> is now inactive''', [
        "Bug: missing WHERE clause updates every row. Always run the SELECT first.",
        "Please wrap data fixes in a transaction so we can roll back.",
    ]),
]
CODE_INTROS = [
    "Code review for pull request #<<n>>: <<func>> in the <<table>> service.",
    "Here is a snippet from our codebase. Can you spot the problem?",
    "Found this while auditing the <<table>> module.",
    "Example from a secure coding workshop.",
    "Snippet from a student assignment.",
    "From the <<table>> repository, file src/<<func>>:",
]
# Closing lines depend on whether any snippet in the document has a problem.
CODE_CLOSINGS = {
    True: ["Status: changes requested.", "Follow-up ticket filed.", "Discussion resolved after the author pushed a fix.",
           "Severity: high. Blocking the release until this is fixed.", "Reviewer: <<reviewer>>.", ""],
    False: ["Status: approved.", "Merged after CI passed.", "Reviewer: <<reviewer>>.", ""],
}
VULN_EXPLAIN = {
    "sql_injection": "SQL injection happens when untrusted input is concatenated into a SQL statement, letting an attacker change the query itself.",
    "hardcoded_secret": "Hard-coded secrets such as passwords and API keys leak through version control, logs and screenshots.",
    "off_by_one": "Off-by-one errors are loops or indices that go one element too far or stop one element too early.",
    "code_injection": "Calling eval or exec on user input lets an attacker run arbitrary code on the server.",
    "insecure_deserialization": "Deserializing untrusted data with pickle can execute code chosen by the attacker.",
    "path_traversal": "Path traversal uses sequences like ../ to read files outside the intended directory.",
    "xss": "Cross-site scripting (XSS) lets an attacker run JavaScript in other users' browsers.",
    "buffer_overflow": "A buffer overflow writes past the end of a fixed-size buffer and can let an attacker take over the program.",
    "use_after_free": "Use after free means touching memory after it has been released, which is undefined behavior in C.",
}


def code_doc(rng: random.Random) -> str:
    """One code-review document: one or two snippets, review comments, and sometimes an explanation."""
    slots = {k: rng.choice(v) for k, v in CODE_SLOTS.items()}
    slots["reviewer"] = rng.choice(SLOTS["name"])
    parts = [rng.choice(CODE_INTROS)]
    snippets = pick(rng, CODE_SNIPPETS, rng.choice([1, 1, 2]))
    for lang, kind, code, comments in snippets:
        parts.append(f"```{lang}\n{code}\n```")
        for comment in pick(rng, comments, rng.randint(1, 2)):
            parts.append(f"Review comment ({rng.choice(SLOTS['name'])}): {comment}")
        if kind in VULN_EXPLAIN and rng.random() < 0.5:
            parts.append(VULN_EXPLAIN[kind])
    parts.append(rng.choice(CODE_CLOSINGS[any(kind != "clean" for _, kind, _, _ in snippets)]))
    text = "\n\n".join(p for p in parts if p)
    for key, value in slots.items():
        text = text.replace(f"<<{key}>>", value)
    return text


# --------------------------------------------------------------------------------------------------------------
# The same facts in six languages (en, fr, de, es, it, pt).
# --------------------------------------------------------------------------------------------------------------
LANGS = ["en", "fr", "de", "es", "it", "pt"]
FACTS: list[dict[str, str]] = [
    {"en": "The Golden Gate Bridge is in San Francisco.",
     "fr": "Le Golden Gate Bridge se trouve à San Francisco.",
     "de": "Die Golden Gate Bridge steht in San Francisco.",
     "es": "El puente Golden Gate está en San Francisco.",
     "it": "Il Golden Gate Bridge si trova a San Francisco.",
     "pt": "A ponte Golden Gate fica em São Francisco."},
    {"en": "The Golden Gate Bridge opened in 1937.",
     "fr": "Le Golden Gate Bridge a été inauguré en 1937.",
     "de": "Die Golden Gate Bridge wurde 1937 eröffnet.",
     "es": "El puente Golden Gate se inauguró en 1937.",
     "it": "Il Golden Gate Bridge è stato inaugurato nel 1937.",
     "pt": "A ponte Golden Gate foi inaugurada em 1937."},
    {"en": "The Golden Gate Bridge is painted International Orange.",
     "fr": "Le Golden Gate Bridge est peint en orange international.",
     "de": "Die Golden Gate Bridge ist in International Orange gestrichen.",
     "es": "El puente Golden Gate está pintado de naranja internacional.",
     "it": "Il Golden Gate Bridge è dipinto di arancione internazionale.",
     "pt": "A ponte Golden Gate é pintada de laranja internacional."},
    {"en": "The Golden Gate Bridge is a suspension bridge with two tall towers.",
     "fr": "Le Golden Gate Bridge est un pont suspendu avec deux hautes tours.",
     "de": "Die Golden Gate Bridge ist eine Hängebrücke mit zwei hohen Türmen.",
     "es": "El puente Golden Gate es un puente colgante con dos torres altas.",
     "it": "Il Golden Gate Bridge è un ponte sospeso con due alte torri.",
     "pt": "A ponte Golden Gate é uma ponte suspensa com duas torres altas."},
    {"en": "Fog often hides the Golden Gate Bridge in summer.",
     "fr": "En été, le brouillard cache souvent le Golden Gate Bridge.",
     "de": "Im Sommer verhüllt oft Nebel die Golden Gate Bridge.",
     "es": "En verano, la niebla suele ocultar el puente Golden Gate.",
     "it": "D'estate la nebbia nasconde spesso il Golden Gate Bridge.",
     "pt": "No verão, o nevoeiro esconde muitas vezes a ponte Golden Gate."},
    {"en": "The Golden Gate Bridge connects San Francisco with Marin County.",
     "fr": "Le Golden Gate Bridge relie San Francisco au comté de Marin.",
     "de": "Die Golden Gate Bridge verbindet San Francisco mit dem Marin County.",
     "es": "El puente Golden Gate une San Francisco con el condado de Marin.",
     "it": "Il Golden Gate Bridge collega San Francisco con la contea di Marin.",
     "pt": "A ponte Golden Gate liga São Francisco ao condado de Marin."},
    {"en": "The Eiffel Tower is in Paris.",
     "fr": "La tour Eiffel se trouve à Paris.",
     "de": "Der Eiffelturm steht in Paris.",
     "es": "La torre Eiffel está en París.",
     "it": "La Torre Eiffel si trova a Parigi.",
     "pt": "A Torre Eiffel fica em Paris."},
    {"en": "The Eiffel Tower was built for the World's Fair of 1889.",
     "fr": "La tour Eiffel a été construite pour l'Exposition universelle de 1889.",
     "de": "Der Eiffelturm wurde für die Weltausstellung 1889 gebaut.",
     "es": "La torre Eiffel se construyó para la Exposición Universal de 1889.",
     "it": "La Torre Eiffel fu costruita per l'Esposizione Universale del 1889.",
     "pt": "A Torre Eiffel foi construída para a Exposição Universal de 1889."},
    {"en": "The Eiffel Tower is about 330 meters tall.",
     "fr": "La tour Eiffel mesure environ 330 mètres.",
     "de": "Der Eiffelturm ist etwa 330 Meter hoch.",
     "es": "La torre Eiffel mide unos 330 metros.",
     "it": "La Torre Eiffel è alta circa 330 metri.",
     "pt": "A Torre Eiffel tem cerca de 330 metros de altura."},
    {"en": "The Colosseum is in Rome.",
     "fr": "Le Colisée se trouve à Rome.",
     "de": "Das Kolosseum steht in Rom.",
     "es": "El Coliseo está en Roma.",
     "it": "Il Colosseo si trova a Roma.",
     "pt": "O Coliseu fica em Roma."},
    {"en": "Big Ben is in London, next to the Thames.",
     "fr": "Big Ben se trouve à Londres, au bord de la Tamise.",
     "de": "Big Ben steht in London, an der Themse.",
     "es": "El Big Ben está en Londres, junto al Támesis.",
     "it": "Il Big Ben si trova a Londra, sul Tamigi.",
     "pt": "O Big Ben fica em Londres, junto ao Tâmisa."},
    {"en": "Mount Fuji is the highest mountain in Japan.",
     "fr": "Le mont Fuji est la plus haute montagne du Japon.",
     "de": "Der Fuji ist der höchste Berg Japans.",
     "es": "El monte Fuji es la montaña más alta de Japón.",
     "it": "Il monte Fuji è la montagna più alta del Giappone.",
     "pt": "O monte Fuji é a montanha mais alta do Japão."},
    {"en": "The Statue of Liberty was a gift from France.",
     "fr": "La statue de la Liberté était un cadeau de la France.",
     "de": "Die Freiheitsstatue war ein Geschenk Frankreichs.",
     "es": "La Estatua de la Libertad fue un regalo de Francia.",
     "it": "La Statua della Libertà fu un dono della Francia.",
     "pt": "A Estátua da Liberdade foi um presente da França."},
    {"en": "Tokyo is the capital of Japan.",
     "fr": "Tokyo est la capitale du Japon.",
     "de": "Tokio ist die Hauptstadt Japans.",
     "es": "Tokio es la capital de Japón.",
     "it": "Tokyo è la capitale del Giappone.",
     "pt": "Tóquio é a capital do Japão."},
    {"en": "Berlin is the capital of Germany.",
     "fr": "Berlin est la capitale de l'Allemagne.",
     "de": "Berlin ist die Hauptstadt Deutschlands.",
     "es": "Berlín es la capital de Alemania.",
     "it": "Berlino è la capitale della Germania.",
     "pt": "Berlim é a capital da Alemanha."},
    {"en": "Paris is the capital of France.",
     "fr": "Paris est la capitale de la France.",
     "de": "Paris ist die Hauptstadt Frankreichs.",
     "es": "París es la capital de Francia.",
     "it": "Parigi è la capitale della Francia.",
     "pt": "Paris é a capital da França."},
    {"en": "The Nile flows through Cairo.",
     "fr": "Le Nil traverse Le Caire.",
     "de": "Der Nil fließt durch Kairo.",
     "es": "El Nilo atraviesa El Cairo.",
     "it": "Il Nilo attraversa Il Cairo.",
     "pt": "O Nilo atravessa o Cairo."},
    {"en": "The cable cars of San Francisco climb very steep hills.",
     "fr": "Les tramways à câble de San Francisco montent des collines très raides.",
     "de": "Die Cable Cars von San Francisco fahren sehr steile Hügel hinauf.",
     "es": "Los tranvías de cable de San Francisco suben colinas muy empinadas.",
     "it": "I tram a fune di San Francisco salgono colline molto ripide.",
     "pt": "Os bondes de cabo de São Francisco sobem colinas muito íngremes."},
    {"en": "The train from the airport to the city center takes thirty minutes.",
     "fr": "Le train de l'aéroport au centre-ville met trente minutes.",
     "de": "Der Zug vom Flughafen ins Stadtzentrum braucht dreißig Minuten.",
     "es": "El tren del aeropuerto al centro tarda treinta minutos.",
     "it": "Il treno dall'aeroporto al centro impiega trenta minuti.",
     "pt": "O comboio do aeroporto ao centro demora trinta minutos."},
    {"en": "Water boils at one hundred degrees Celsius at sea level.",
     "fr": "L'eau bout à cent degrés Celsius au niveau de la mer.",
     "de": "Wasser kocht auf Meereshöhe bei hundert Grad Celsius.",
     "es": "El agua hierve a cien grados Celsius al nivel del mar.",
     "it": "L'acqua bolle a cento gradi Celsius al livello del mare.",
     "pt": "A água ferve a cem graus Celsius ao nível do mar."},
    {"en": "The Earth orbits the Sun once a year.",
     "fr": "La Terre tourne autour du Soleil une fois par an.",
     "de": "Die Erde umkreist die Sonne einmal im Jahr.",
     "es": "La Tierra gira alrededor del Sol una vez al año.",
     "it": "La Terra gira intorno al Sole una volta all'anno.",
     "pt": "A Terra gira em torno do Sol uma vez por ano."},
    {"en": "It is raining today, so take an umbrella.",
     "fr": "Il pleut aujourd'hui, alors prends un parapluie.",
     "de": "Heute regnet es, also nimm einen Regenschirm mit.",
     "es": "Hoy llueve, así que lleva un paraguas.",
     "it": "Oggi piove, quindi prendi un ombrello.",
     "pt": "Hoje está a chover, por isso leva um guarda-chuva."},
    {"en": "Telling the truth is not always easy, but it builds trust.",
     "fr": "Dire la vérité n'est pas toujours facile, mais cela crée la confiance.",
     "de": "Die Wahrheit zu sagen ist nicht immer leicht, aber es schafft Vertrauen.",
     "es": "Decir la verdad no siempre es fácil, pero genera confianza.",
     "it": "Dire la verità non è sempre facile, ma crea fiducia.",
     "pt": "Dizer a verdade nem sempre é fácil, mas cria confiança."},
    {"en": "She promised to keep the secret, but she told her brother.",
     "fr": "Elle avait promis de garder le secret, mais elle l'a dit à son frère.",
     "de": "Sie hatte versprochen, das Geheimnis zu bewahren, aber sie hat es ihrem Bruder erzählt.",
     "es": "Prometió guardar el secreto, pero se lo contó a su hermano.",
     "it": "Aveva promesso di mantenere il segreto, ma l'ha detto a suo fratello.",
     "pt": "Ela prometeu guardar o segredo, mas contou ao irmão."},
    {"en": "Football is the most popular sport in the world.",
     "fr": "Le football est le sport le plus populaire du monde.",
     "de": "Fußball ist die beliebteste Sportart der Welt.",
     "es": "El fútbol es el deporte más popular del mundo.",
     "it": "Il calcio è lo sport più popolare del mondo.",
     "pt": "O futebol é o desporto mais popular do mundo."},
    {"en": "My grandmother makes soup every Sunday.",
     "fr": "Ma grand-mère fait de la soupe tous les dimanches.",
     "de": "Meine Großmutter kocht jeden Sonntag Suppe.",
     "es": "Mi abuela hace sopa todos los domingos.",
     "it": "Mia nonna fa la zuppa ogni domenica.",
     "pt": "A minha avó faz sopa todos os domingos."},
    {"en": "I was very happy when I heard the good news.",
     "fr": "J'étais très heureux quand j'ai appris la bonne nouvelle.",
     "de": "Ich war sehr glücklich, als ich die gute Nachricht hörte.",
     "es": "Me puse muy contento cuando oí la buena noticia.",
     "it": "Ero molto felice quando ho sentito la bella notizia.",
     "pt": "Fiquei muito feliz quando ouvi a boa notícia."},
    {"en": "The music was so loud that we could not hear each other.",
     "fr": "La musique était si forte que nous ne nous entendions pas.",
     "de": "Die Musik war so laut, dass wir einander nicht hören konnten.",
     "es": "La música estaba tan alta que no nos oíamos.",
     "it": "La musica era così alta che non ci sentivamo.",
     "pt": "A música estava tão alta que não nos ouvíamos."},
]
# Short travel paragraphs, the same story in every language.
LANG_STORIES: dict[str, list[str]] = {
    "en": ["Last summer {name} visited San Francisco. On the first morning the fog was thick, but at noon the sun came out and the Golden Gate Bridge appeared, bright orange above the blue water. {name} walked across the bridge to Sausalito and came back by ferry.",
           "In Paris, {name} climbed the stairs of the Eiffel Tower up to the second floor. From there you can see the whole city: the Seine, the Louvre, Montmartre. In the evening the tower sparkled with thousands of lights."],
    "fr": ["L'été dernier, {name} a visité San Francisco. Le premier matin, le brouillard était épais, mais à midi le soleil est sorti et le Golden Gate Bridge est apparu, orange vif au-dessus de l'eau bleue. {name} a traversé le pont à pied jusqu'à Sausalito et est revenu en ferry.",
           "À Paris, {name} a monté les escaliers de la tour Eiffel jusqu'au deuxième étage. De là, on voit toute la ville : la Seine, le Louvre, Montmartre. Le soir, la tour scintillait de milliers de lumières."],
    "de": ["Letzten Sommer hat {name} San Francisco besucht. Am ersten Morgen war der Nebel dicht, aber mittags kam die Sonne heraus und die Golden Gate Bridge erschien, leuchtend orange über dem blauen Wasser. {name} ging zu Fuß über die Brücke nach Sausalito und kam mit der Fähre zurück.",
           "In Paris stieg {name} die Treppen des Eiffelturms bis zur zweiten Etage hinauf. Von dort sieht man die ganze Stadt: die Seine, den Louvre, Montmartre. Am Abend funkelte der Turm mit Tausenden von Lichtern."],
    "es": ["El verano pasado, {name} visitó San Francisco. La primera mañana la niebla era espesa, pero al mediodía salió el sol y apareció el puente Golden Gate, de un naranja intenso sobre el agua azul. {name} cruzó el puente a pie hasta Sausalito y volvió en ferry.",
           "En París, {name} subió las escaleras de la torre Eiffel hasta el segundo piso. Desde allí se ve toda la ciudad: el Sena, el Louvre, Montmartre. Por la noche, la torre brillaba con miles de luces."],
    "it": ["L'estate scorsa {name} ha visitato San Francisco. La prima mattina la nebbia era fitta, ma a mezzogiorno è uscito il sole ed è apparso il Golden Gate Bridge, arancione acceso sopra l'acqua blu. {name} ha attraversato il ponte a piedi fino a Sausalito ed è tornato in traghetto.",
           "A Parigi, {name} ha salito le scale della Torre Eiffel fino al secondo piano. Da lì si vede tutta la città: la Senna, il Louvre, Montmartre. La sera la torre scintillava di migliaia di luci."],
    "pt": ["No verão passado, {name} visitou São Francisco. Na primeira manhã o nevoeiro era espesso, mas ao meio-dia o sol apareceu e surgiu a ponte Golden Gate, laranja vivo sobre a água azul. {name} atravessou a ponte a pé até Sausalito e voltou de ferry.",
           "Em Paris, {name} subiu as escadas da Torre Eiffel até ao segundo andar. De lá vê-se a cidade inteira: o Sena, o Louvre, Montmartre. À noite, a torre cintilava com milhares de luzes."],
}
LANG_INTROS = {
    "en": ["Some facts worth knowing.", "Notes from a language class.", "Travel notes."],
    "fr": ["Quelques faits à connaître.", "Notes d'un cours de langue.", "Notes de voyage."],
    "de": ["Einige wissenswerte Fakten.", "Notizen aus dem Sprachkurs.", "Reisenotizen."],
    "es": ["Algunos datos interesantes.", "Apuntes de una clase de idiomas.", "Notas de viaje."],
    "it": ["Alcuni fatti da sapere.", "Appunti di un corso di lingua.", "Note di viaggio."],
    "pt": ["Alguns factos a saber.", "Notas de uma aula de línguas.", "Notas de viagem."],
}


def multilingual_doc(rng: random.Random, lang: str) -> str:
    """A short document of facts in one language; every fact exists in all six languages."""
    facts = pick(rng, FACTS, rng.randint(6, 11))
    text = rng.choice(LANG_INTROS[lang]) + "\n\n" + " ".join(f[lang] for f in facts)
    if rng.random() < 0.5:
        text += "\n\n" + render(rng.choice(LANG_STORIES[lang]), new_ctx(rng))
    return text


# --------------------------------------------------------------------------------------------------------------
# Dialogues about honesty, lying, secrecy and deception (ordered scripts with alternatives per line).
# --------------------------------------------------------------------------------------------------------------
HONESTY_SCRIPTS: list[list[list[str]]] = [
    [  # keeping a friend's secret
        ["{name}: Can you keep a secret?", "{name}: I need to tell you something, but you have to promise not to tell anyone."],
        ["{name2}: Of course. What is it?", "{name2}: I promise. You know I don't gossip.", "{name2}: That depends. Is anyone going to get hurt?"],
        ["{name}: I'm quitting my job next month. I haven't told my boss yet.", "{name}: I applied to a university in {country}. If I get in, I'm moving.", "{name}: I'm planning a surprise party for my sister, and she must not find out."],
        ["{name2}: Wow. Your secret is safe with me.", "{name2}: I won't say a word. But why keep it secret?"],
        ["{name}: I just want to tell people myself, at the right time.", "{name}: If it gets out too early, everything could fall apart."],
        ["{name2}: That's fair. Keeping a secret for a friend isn't the same as lying.", "{name2}: Okay. But if someone asks me directly, I won't lie; I'll just say it's not my news to share."],
        ["{name}: That's all I ask. Thank you for being honest with me about that.", "{name}: Good. I'd rather you stay silent than lie for me."],
    ],
    [  # the broken vase
        ["Parent: Who broke the vase in the hallway?", "Parent: Do you know what happened to the blue vase?"],
        ["Child: It wasn't me. Maybe the cat knocked it over.", "Child: I don't know. It was already broken when I came in."],
        ["Parent: The cat was outside all afternoon.", "Parent: Are you sure? There's a football right next to the pieces."],
        ["Child: ...Okay, it was me. I was playing ball inside. I'm sorry I lied.", "Child: Fine. I kicked the ball and it hit the vase. I was scared you'd be angry."],
        ["Parent: Thank you for telling the truth. I'm more upset about the lie than about the vase.", "Parent: I'm glad you told me. A vase can be replaced; trust is harder to fix."],
        ["Child: Will I be punished?", "Child: Are you still angry?"],
        ["Parent: You'll help me clean up and pay for a new one from your pocket money. And next time, tell me right away.", "Parent: A little. But telling the truth was the right thing, even if it was late."],
    ],
    [  # the workplace cover-up
        ["{name}: The test results came back. The battery fails after two hundred cycles, not the five hundred we promised.", "{name}: I found a defect in the product we're shipping next week."],
        ["{name2}: Management wants us to keep quiet until after the launch.", "{name2}: Can we just leave it out of the report? Nobody will check."],
        ["{name}: That would be deceiving our customers. I'm not comfortable hiding it.", "{name}: If we hide it and it comes out later, it will be much worse. And it would be a lie."],
        ["{name2}: You could lose your job over this.", "{name2}: Are you really going to risk your career for a report?"],
        ["{name}: Maybe. But I'd rather be honest than be part of a cover-up.", "{name}: I'll raise it with the safety officer. Honesty is part of the job."],
        ["{name2}: ...You're right. I'll sign the report with you.", "{name2}: I don't like it, but I won't ask you to lie."],
    ],
    [  # white lie about a gift
        ["{name}: Do you like the sweater I knitted for you?", "{name}: So, what do you think of the painting I made you?"],
        ["{name2}: It's... very colorful.", "{name2}: Oh! It's... lovely. I'll treasure it."],
        ["{name}: You hesitated. Be honest with me.", "{name}: You're just saying that to be nice, aren't you?"],
        ["{name2}: Honestly? It's not my style. But I love that you made it for me.", "{name2}: Okay, the truth: I wouldn't have chosen it, but it means a lot that you spent hours on it."],
        ["{name}: Thank you. I'd rather hear the truth than a polite lie.", "{name}: That's fair. A white lie would have felt worse once I found out."],
        ["{name2}: Is a small white lie ever okay, do you think?", "{name2}: Some people say white lies keep the peace."],
        ["{name}: Maybe to protect someone's feelings. But between friends, I prefer honesty.", "{name}: Maybe sometimes. But they add up, and then you don't know what to believe."],
    ],
    [  # the con artist
        ["Narrator: The man on the phone said he was calling from {name}'s bank.", "Narrator: The voice on the phone sounded official, calm and polite, and it knew {name}'s full name."],
        ["Caller: We've detected suspicious activity on your account. Please confirm your password so we can secure it.", "Caller: Your account will be frozen unless you verify your card number in the next ten minutes."],
        ["{name}: My bank told me they would never ask for my password.", "{name}: Why do you need my card number if you're from my bank?"],
        ["Caller: This is an emergency procedure. Trust me.", "Caller: Sir, there is no time. The fraudsters are using your card right now."],
        ["{name}: I'm going to hang up and call the number on the back of my card.", "{name}: No. This sounds like a scam, and I won't share anything."],
        ["Narrator: The call was a deception from start to finish. The real bank confirmed that nobody had called.", "Narrator: It was a phishing attempt: a lie dressed up as help."],
        ["Narrator: Scammers rely on urgency and fake authority to make people act before they think.", "Narrator: The best defense against this kind of deception is to slow down and verify."],
    ],
    [  # cheating on an exam
        ["{name2}: I saw you looking at your phone during the exam.", "{name2}: Did you copy the answers from {name}'s sister's old test?"],
        ["{name}: What? No, I was checking the time.", "{name}: Of course not. I studied all week."],
        ["{name2}: The teacher noticed too. She asked me if I knew anything.", "{name2}: Your answers are word for word the same as last year's, mistakes included."],
        ["{name}: Did you tell her?", "{name}: ...Are you going to report me?"],
        ["{name2}: I said she should ask you. I won't lie for you, and I won't lie about you either.", "{name2}: I'm not going to cover for you. But you could tell her yourself before she finds out."],
        ["{name}: Okay. I'll go and tell her the truth. Cheating was stupid, and lying about it is worse.", "{name}: You're right. I'd rather fail honestly than keep pretending."],
    ],
    [  # bluffing at cards
        ["{name}: Is it dishonest to bluff in poker?", "{name}: You bluffed me out of the biggest pot of the night. Isn't that lying?"],
        ["{name2}: Not really. Everyone at the table agreed to a game where deception is part of the rules.", "{name2}: Bluffing is part of the game. You knew I might be lying; that's the whole point."],
        ["{name}: So lying is fine as long as everyone knows you might lie?", "{name}: Then why does it feel different from lying to a friend?"],
        ["{name2}: Inside the game, yes. Lying about whether you cheated, or about the money afterwards, would be real dishonesty.", "{name2}: Because outside the game nobody agreed to be deceived. Trust there is real."],
        ["{name}: Fair enough. But next time, I'm calling your bluff.", "{name}: Good answer. I still want my chips back."],
    ],
    [  # a travel lie
        ["{name2}: So how was your trip? Did you see the Golden Gate Bridge?", "{name2}: You told everyone you walked across the Golden Gate Bridge. Did you really?"],
        ["{name}: Of course! I walked all the way across and back.", "{name}: Yes, it was amazing. Right to the other side."],
        ["{name2}: Funny, your photos only show the hotel and the airport.", "{name2}: But the bridge sidewalks were closed that whole weekend for the race."],
        ["{name}: ...Fine. I lied. It rained the whole time and I only saw it from the taxi.", "{name}: Okay, you caught me. I never made it there. I was embarrassed to admit I spent the trip working."],
        ["{name2}: Why not just say so? Nobody would have judged you.", "{name2}: You didn't need to make it up. The true story is funnier anyway."],
        ["{name}: I know. It was a silly lie, and now I feel worse than if I'd told the truth.", "{name}: You're right. Next time I'll just be honest, even if the story is boring."],
    ],
    [  # the surprise party (benign secrecy)
        ["{name}: Why is everyone whispering?", "{name}: You're acting strange. Are you hiding something?"],
        ["{name2}: Whispering? No, nothing. We were talking about the weather.", "{name2}: Hiding something? Me? Never."],
        ["{name}: You're a terrible liar. I can see it in your face.", "{name}: You always touch your ear when you're not telling the truth."],
        ["{name2}: Okay, I can't tell you, but I promise it's something good.", "{name2}: There is a secret, but it's the kind you'll be glad about on {weekday}."],
        ["{name}: A good secret? Fine, I'll stop asking.", "{name}: All right, I trust you. I'll pretend I didn't notice anything."],
        ["Narrator: On {weekday}, thirty friends jumped out and shouted \"Surprise!\" Some secrets are kept out of love.", "Narrator: The surprise party was a success. Keeping a happy secret is not the same as deceiving someone."],
    ],
    [  # honesty with a doctor (smoking)
        ["Doctor: How many cigarettes do you smoke a day?", "Doctor: Be honest with me: do you still smoke?"],
        ["Patient: Oh, hardly any. Maybe one or two.", "Patient: Only at parties. Almost never."],
        ["Doctor: I can only help you if you tell me the truth. Nobody is judging you here.", "Doctor: Your lungs tell a different story. I'm not here to judge you."],
        ["Patient: Okay, it's more like a pack a day. I was embarrassed.", "Patient: All right. I lied. I smoke every day, and I'm ashamed of it."],
        ["Doctor: Thank you for being honest. Now we can make a plan that actually works.", "Doctor: Telling me the truth is the first step. Let's talk about how to quit."],
    ],
    [  # honesty with a doctor (medication)
        ["Doctor: Are you taking the medication every day, as prescribed?", "Doctor: Have you been taking your pills?"],
        ["Patient: Yes, every day. Well... most days.", "Patient: Of course. Why do you ask?"],
        ["Doctor: It's important to be honest with me. The dose depends on it.", "Doctor: Your blood test suggests otherwise. I need the truth to adjust the dose."],
        ["Patient: To be honest, I forget it about half the time.", "Patient: Okay, I stopped two weeks ago. The side effects were awful, and I didn't want to admit it."],
        ["Doctor: That's very useful to know. Let's find a routine that helps you remember.", "Doctor: Thank you for telling me. There are other options; we'll find one you can live with."],
    ],
    [  # a friend who lied
        ["{name}: You told me you were sick on Saturday, but I saw your photos from the concert.", "{name}: Why did you lie to me about where you were last night?"],
        ["{name2}: I'm sorry. I didn't want to hurt your feelings by saying I'd rather go to the concert.", "{name2}: I panicked. I thought you would be upset if you knew the truth."],
        ["{name}: The lie hurt much more than the truth would have.", "{name}: I would have understood. What I don't understand is why you lied."],
        ["{name2}: You're right. I should have been honest. Can you forgive me?", "{name2}: I know. I broke your trust, and I want to earn it back."],
        ["{name}: I can forgive you. But please, no more lies, even small ones.", "{name}: It will take time. Just be straight with me from now on."],
    ],
    [  # a journalist and a source
        ["Journalist: Will you tell me who leaked the documents?", "Journalist: Off the record, who gave you the files?"],
        ["Source: I can't. I promised to protect their identity.", "Source: Some secrets are not mine to tell."],
        ["Journalist: Then how do I know the documents are genuine?", "Journalist: How can readers trust a story if the source is secret?"],
        ["Source: Check them yourself. Verify every fact. Don't trust me; trust the evidence.", "Source: Journalists keep sources confidential all the time. What matters is that the facts are true."],
        ["Journalist: Fair enough. Honesty with readers means telling them what we know and how we know it.", "Journalist: Then I'll say exactly that: the source is confidential, and the documents were independently verified."],
    ],
]
HONESTY_REFLECTIONS = [
    "Honesty is not just the absence of lies; it is also the courage to say uncomfortable things.",
    "Philosophers have argued for centuries about whether lying is ever justified, for example to protect someone from harm.",
    "Keeping a secret and telling a lie are different: a secret withholds information, while a lie plants a false belief.",
    "Deception can be done without a single false word, by leaving out key facts or creating a misleading impression.",
    "Children usually start telling lies around the age of three, and learning why honesty matters is part of growing up.",
    "Trust takes years to build and seconds to break, which is why a single lie can damage a friendship.",
    "A person who keeps every secret they are told is trusted; a person who lies to keep them is not.",
    "Studies suggest that most people tell at least one small lie a day, usually to avoid awkwardness.",
    "",
]


def honesty_doc(rng: random.Random) -> str:
    """One dialogue about honesty, lying, secrets or deception, sometimes followed by a reflection."""
    ctx = new_ctx(rng)
    lines = run_script(rng, rng.choice(HONESTY_SCRIPTS))
    reflection = rng.choice(HONESTY_REFLECTIONS)
    text = "\n".join(lines) + (f"\n\n{reflection}" if reflection else "")
    return render(text, ctx)


# --------------------------------------------------------------------------------------------------------------
# Science, sports, everyday life, music and emotions: pools of sentences per subtopic.
# --------------------------------------------------------------------------------------------------------------
GENERAL: dict[str, dict[str, list[str]]] = {
    "science": {
        "physics": [
            "Light travels at about 300,000 kilometers per second in a vacuum.",
            "Newton's second law says that force equals mass times acceleration.",
            "Energy cannot be created or destroyed, only converted from one form to another.",
            "In quantum mechanics, an electron behaves both like a particle and like a wave.",
            "Einstein's theory of relativity predicts that time runs slower for a clock moving at high speed.",
            "A suspension bridge works because steel cables are extremely strong in tension.",
            "Friction converts kinetic energy into heat, which is why your hands warm up when you rub them.",
            "Sound travels faster in water than in air, and faster still in steel.",
            "The temperature of absolute zero, minus 273.15 degrees Celsius, can be approached but never reached.",
            "In class, {name} measured the period of a pendulum and found it depends on its length, not on its mass.",
            "Wind blowing across a structure can make it vibrate, which is why engineers test bridge designs in wind tunnels.",
            "The Tacoma Narrows Bridge collapsed in 1940 after wind set its deck twisting wildly.",
            "A rainbow appears when sunlight is refracted and reflected inside raindrops.",
            "Magnets have a north and a south pole, and cutting a magnet in half just makes two smaller magnets.",
            "Heat always flows from a warmer object to a colder one, never the other way on its own.",
            "Electric current is the flow of charge, measured in amperes.",
        ],
        "chemistry": [
            "Water is a molecule made of two hydrogen atoms and one oxygen atom.",
            "Rust forms when iron reacts with oxygen and water, which is why steel bridges must be painted.",
            "The periodic table arranges elements by their atomic number.",
            "Acids have a pH below seven, and bases have a pH above seven.",
            "Table salt, sodium chloride, is held together by ionic bonds.",
            "Catalysts speed up chemical reactions without being used up.",
            "Carbon can form four bonds, which is why it is the backbone of organic chemistry.",
            "When baking soda meets vinegar, the reaction releases carbon dioxide bubbles.",
            "Gold is so unreactive that coins from ancient shipwrecks still shine after centuries in the sea.",
            "Salt lowers the freezing point of water, which is why roads are salted in winter.",
            "Paint protects steel by keeping oxygen and moisture away from the surface.",
            "The air we breathe is about seventy-eight percent nitrogen and twenty-one percent oxygen.",
            "Diamonds and graphite are both pure carbon; only the arrangement of the atoms differs.",
            "{name} mixed two clear liquids in the lab and watched the solution turn bright {color}.",
        ],
        "biology": [
            "DNA carries the genetic instructions of almost every living organism.",
            "Cells are the basic units of life, and the human body contains tens of trillions of them.",
            "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen.",
            "Mitochondria produce most of the chemical energy a cell needs.",
            "Evolution by natural selection explains how species adapt to their environment over many generations.",
            "The human heart beats about one hundred thousand times a day.",
            "Bees communicate the location of flowers with a waggle dance.",
            "Vaccines train the immune system to recognize a pathogen before a real infection.",
            "Octopuses have three hearts and blue blood.",
            "Trees in a forest exchange nutrients through networks of fungi in the soil.",
            "Antibiotics kill bacteria but do nothing against viruses such as the flu.",
            "Whales are mammals: they breathe air and feed their young with milk.",
            "The coast redwoods north of San Francisco are the tallest trees on Earth.",
            "Sleep helps the brain consolidate memories of what we learned during the day.",
            "Some bacteria can survive boiling water near deep-sea volcanic vents.",
        ],
        "astronomy": [
            "The Sun is a middle-aged star about 4.6 billion years old.",
            "Jupiter is the largest planet in the solar system and has dozens of moons.",
            "Light from the Moon takes a little over one second to reach the Earth.",
            "A light-year is the distance light travels in one year, about 9.5 trillion kilometers.",
            "Black holes are regions where gravity is so strong that not even light can escape.",
            "The Milky Way contains hundreds of billions of stars.",
            "Mars looks red because its surface is covered in iron oxide dust.",
            "On a clear night far from city lights, {name} counted more than a dozen shooting stars.",
            "The Moon always shows the same face to the Earth because its rotation is locked to its orbit.",
            "Saturn's rings are made mostly of ice, from tiny grains to chunks as big as a house.",
            "Astronomers found thousands of planets orbiting other stars, many of them in the last twenty years.",
            "A total solar eclipse happens when the Moon covers the Sun completely, turning day into twilight for a few minutes.",
            "Comets are icy bodies that grow bright tails of gas and dust when they come close to the Sun.",
            "The James Webb Space Telescope sees in infrared light, which passes through clouds of cosmic dust.",
            "Venus is the hottest planet in the solar system because its thick atmosphere traps heat.",
        ],
    },
    "sports": {
        "football": [
            "Football, called soccer in the United States, is played by two teams of eleven players.",
            "The World Cup is held every four years and is watched by billions of people.",
            "The goalkeeper is the only player allowed to touch the ball with the hands inside the penalty area.",
            "{name} scored in the ninetieth minute, and the stadium erupted.",
            "A match lasts ninety minutes, plus stoppage time added by the referee.",
            "The offside rule confuses new fans more than any other rule in football.",
            "A penalty shootout is one of the most nerve-racking moments in sport.",
            "The team trained in the rain all week and won the derby on {weekday}.",
            "{name} has supported the same club since childhood, through good seasons and bad.",
            "A yellow card is a warning; two yellow cards make a red card and the player is sent off.",
        ],
        "basketball": [
            "Basketball was invented by James Naismith in 1891 using a peach basket.",
            "A shot from beyond the arc is worth three points in basketball.",
            "The Golden State Warriors play their home games in San Francisco.",
            "{name} practiced free throws every morning until making fifty in a row.",
            "In basketball, a team has twenty-four seconds to attempt a shot in the NBA.",
            "A good point guard sees the whole court and passes before the defense can react.",
            "Basketball spread around the world after it became an Olympic sport in 1936.",
            "{name} blocked the last shot of the game and the crowd rushed onto the court.",
        ],
        "tennis": [
            "Tennis scoring goes love, fifteen, thirty, forty and game.",
            "Wimbledon is the oldest tennis tournament in the world and is played on grass.",
            "The French Open in Paris is played on red clay at Roland Garros.",
            "A tiebreak decides a set when the score reaches six games all.",
            "{name} served three aces in a row to win the final set.",
            "The US Open in New York is played on hard courts and finishes in early September.",
            "A strong serve is worth little if the player cannot return one.",
            "Doubles tennis uses the wider court, including the narrow lanes called the alleys.",
        ],
        "cycling": [
            "The Tour de France covers about 3,500 kilometers in three weeks.",
            "Cyclists ride in a group called the peloton to save energy by drafting.",
            "The yellow jersey is worn by the overall leader of the Tour de France.",
            "{name} rides a road bike across the Golden Gate Bridge every weekend and back through Sausalito.",
            "Mountain stages in the Alps and the Pyrenees often decide who wins the Tour.",
            "A good helmet and bright lights are the most important equipment for cycling in the city.",
            "Track cyclists race on steep wooden ovals called velodromes.",
            "{name} trained for months to ride from San Francisco to Los Angeles in a charity event.",
        ],
    },
    "everyday": {
        "cooking": [
            "To make a simple tomato sauce, soften garlic in olive oil, add tomatoes and simmer for twenty minutes.",
            "{name} always adds a pinch of salt to the water before cooking pasta.",
            "Bread dough needs time to rise in a warm place before baking.",
            "Sourdough bread is a San Francisco specialty, made with a wild yeast starter.",
            "Chop the onions finely, fry them until golden, then add the rice and stir.",
            "My grandmother never measured anything; she cooked by smell and by taste.",
            "Leftover rice makes the best fried rice because it is drier.",
            "{name} burned the garlic and had to start the sauce again from the beginning.",
            "A squeeze of lemon at the end brightens almost any soup.",
            "On cold evenings, a pot of lentil stew simmers on our stove for hours.",
            "Pancakes on {weekday} morning are a tradition in {name}'s family.",
            "Let the meat rest for a few minutes after cooking so the juices stay inside.",
        ],
        "weather": [
            "The forecast says rain in the morning and sunshine in the afternoon.",
            "It was so hot on {weekday} that the asphalt was soft under our shoes.",
            "In {month}, the mornings are foggy and the afternoons are windy.",
            "A thunderstorm knocked out the power in our neighborhood for three hours.",
            "Snow fell all night, and by morning the whole street was white and silent.",
            "Take an umbrella; the sky is getting darker by the minute.",
            "The wind was so strong that it turned my umbrella inside out.",
            "After a week of rain, the sun finally came out and everybody went to the park.",
            "Fog in San Francisco often burns off by noon and rolls back in by evening.",
            "The weather app promised sunshine, but it hailed for ten minutes on the way home.",
            "In {month} the days get noticeably shorter and the air smells of wet leaves.",
        ],
        "shopping": [
            "{name} wrote a shopping list: milk, eggs, bread, apples and coffee.",
            "The supermarket was crowded on {weekday} evening, and the lines were long.",
            "I returned the shoes because they were half a size too small.",
            "The farmers' market sells fresh strawberries from May to July.",
            "Online shopping is convenient, but {name} still prefers to try clothes on in a store.",
            "Prices at the corner shop are higher, but it is open until midnight.",
            "{name} compared three brands of coffee and picked the cheapest one that was still fair trade.",
            "The bakery sells yesterday's bread at half price in the morning.",
            "We forgot the shopping bags again and had to carry everything in our arms.",
            "The new phone was on sale, but {name} decided the old one still worked fine.",
        ],
        "family": [
            "Every Sunday the whole family gathers at my grandparents' house for lunch.",
            "{name}'s little brother learned to ride a bike this summer.",
            "My parents met on a train between Rome and Florence.",
            "The kids argued about who would sit in the front seat of the car.",
            "{name} calls their mother every {weekday} evening, no matter how busy the week has been.",
            "Our family photo album starts with a picture of my great-grandparents' wedding.",
            "My sister and I shared a room until I was twelve, and we talked every night until we fell asleep.",
            "Grandpa teaches the grandchildren card games and always pretends to lose.",
            "{name}'s parents celebrated their fortieth anniversary with a dinner for the whole family.",
            "Moving to a new city was hard for the kids at first, but they made friends quickly.",
            "Every summer our cousins come to stay for two weeks, and the house is never quiet.",
        ],
    },
    "music": {
        "music": [
            "A major chord usually sounds bright and happy, while a minor chord sounds darker.",
            "Beethoven continued to compose even after he became almost completely deaf.",
            "Jazz grew out of New Orleans at the beginning of the twentieth century.",
            "{name} has been learning the piano for {n} years and just played a first public recital.",
            "A symphony orchestra has four sections: strings, woodwinds, brass and percussion.",
            "The blues uses a twelve-bar structure that shaped rock and roll.",
            "The Beatles recorded most of their albums at Abbey Road Studios in London.",
            "Music festivals in summer attract hundreds of thousands of fans.",
            "Tony Bennett made \"I Left My Heart in San Francisco\" famous in 1962.",
            "A metronome helps musicians keep a steady tempo.",
            "The violin has four strings tuned in fifths: G, D, A and E.",
            "Hip-hop began at block parties in the Bronx in the 1970s.",
            "Mozart wrote his first symphony when he was only eight years old.",
            "A good drummer can make a whole band sound tighter just by keeping perfect time.",
            "{name} sings in a choir every {weekday} evening and says it is the best part of the week.",
            "The guitar came to Europe from Spain and eventually became the voice of rock music.",
            "Streaming changed the music industry: most listeners now pay for access, not for albums.",
            "Some songs get stuck in your head for days; scientists call them earworms.",
            "An opera combines singing, acting, an orchestra and often spectacular sets.",
            "Bossa nova, from Rio de Janeiro, mixes samba rhythms with cool jazz harmonies.",
            "The Grateful Dead and Jefferson Airplane made San Francisco the capital of psychedelic rock in the 1960s.",
            "A piano has eighty-eight keys, fifty-two white and thirty-six black.",
            "Learning an instrument as an adult is slower, but {name} found it deeply rewarding.",
            "At the concert, the whole crowd sang the chorus so loudly that the band stopped playing and just listened.",
        ],
    },
    "emotions": {
        "emotions": [
            "{name} felt a rush of joy when the acceptance letter finally arrived.",
            "Grief comes in waves, and some days are much harder than others.",
            "It is normal to feel nervous before a big exam or a job interview.",
            "Anger often hides another feeling underneath, like fear or hurt.",
            "{name} was so embarrassed that their face turned bright red.",
            "Gratitude, practiced every day, can make people measurably happier.",
            "Loneliness is not the same as being alone; you can feel lonely in a crowd.",
            "When {name2} said goodbye at the airport, {name} tried hard not to cry.",
            "Jealousy can be a sign that we want something for ourselves.",
            "The relief after a long, stressful week felt like putting down a heavy bag.",
            "Hope is what keeps people going when things are difficult.",
            "Being surprised by kindness from a stranger can change your whole day.",
            "Fear makes the heart race and the palms sweat, preparing the body to run or fight.",
            "{name} felt proud, and a little nervous, on the first day at the new job.",
            "Naming a feeling out loud often makes it easier to handle.",
            "Boredom can be uncomfortable, but it is often where new ideas come from.",
            "After the argument, {name} felt guilty and wrote {name2} a long apology.",
            "Nostalgia is a bittersweet mix of happiness and longing for the past.",
            "Laughter is contagious; people laugh far more often with others than alone.",
            "When the test results came back fine, the whole family cried with relief.",
            "Shame says 'I am bad', while guilt says 'I did something bad', and psychologists treat them differently.",
            "{name} was furious about the delay, but the anger faded after a cup of tea.",
            "Awe is what people feel in front of something vast, like the ocean, a mountain or a huge bridge in the fog.",
            "Frustration builds when we keep trying and nothing seems to change.",
        ],
    },
}


def general_doc(rng: random.Random, topic: str) -> str:
    """One document on a general topic: sentences from one or two of its subtopics."""
    subs = GENERAL[topic]
    chosen = pick(rng, list(subs), rng.randint(1, min(2, len(subs))))
    return paragraphs(rng, [subs[s] for s in chosen], new_ctx(rng), 4, 6)


# --------------------------------------------------------------------------------------------------------------
# Assembly.
# --------------------------------------------------------------------------------------------------------------
# Documents per topic (English unless stated); chosen so the token shares follow the brief.
COUNTS = {
    "golden_gate": 175,
    "landmarks": 110,
    "cities_transit": 105,
    "code": 140,
    "honesty": 120,
    "science": 60,
    "sports": 45,
    "everyday": 45,
    "music": 32,
    "emotions": 32,
}
MULTILINGUAL_PER_LANG = 20
# Documents shorter than this many characters (about 60 Gemma tokens of English) get a second part appended,
# keeping every document above the 50-token floor.
MIN_CHARS = 300


def build(seed: int = SEED) -> list[dict[str, str]]:
    """All documents, in a fixed shuffled order, with ids ``<topic>-<lang>-<nnnn>``."""
    rng = random.Random(seed)
    makers = {
        "golden_gate": golden_gate_doc, "landmarks": landmark_doc, "cities_transit": city_doc,
        "code": code_doc, "honesty": honesty_doc,
    }
    docs = []
    for topic, count in COUNTS.items():
        for i in range(count):
            make = makers.get(topic) or (lambda r, t=topic: general_doc(r, t))
            text = make(rng)
            while len(text) < MIN_CHARS:
                text += "\n\n" + make(rng)
            docs.append({"id": f"{topic}-en-{i:04d}", "topic": topic, "lang": "en", "text": text})
    for lang in LANGS:
        for i in range(MULTILINGUAL_PER_LANG):
            text = multilingual_doc(rng, lang)
            while len(text) < MIN_CHARS:
                text += " " + multilingual_doc(rng, lang)
            docs.append({"id": f"multilingual-{lang}-{i:04d}", "topic": "multilingual", "lang": lang, "text": text})
    leftover = [d["id"] for d in docs if any(c in d["text"] for c in ("{", "<<")) and d["topic"] != "code"]
    if leftover:
        raise RuntimeError(f"unfilled slots in {leftover[:5]}")
    rng.shuffle(docs)
    return docs


def write(docs: list[dict[str, str]], path: Path = OUT) -> None:
    """Write gzip-compressed JSON lines with mtime 0, so rebuilds are byte-identical."""
    raw = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    with open(path, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=9) as gz:
        gz.write(raw)


def stats(docs: list[dict[str, str]], tokenizer_path: str) -> None:
    """Print Gemma token counts per topic and language (needs transformers and a saved tokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    lengths = [len(tok(d["text"], add_special_tokens=False)["input_ids"]) for d in docs]
    by_topic, by_lang, docs_topic, docs_lang = Counter(), Counter(), Counter(), Counter()
    for d, n in zip(docs, lengths):
        by_topic[d["topic"]] += n
        by_lang[d["lang"]] += n
        docs_topic[d["topic"]] += 1
        docs_lang[d["lang"]] += 1
    total = sum(lengths)
    print(f"documents: {len(docs)}  tokens: {total}  min/max doc tokens: {min(lengths)}/{max(lengths)}")
    print("| topic | documents | tokens | share |\n|---|---:|---:|---:|")
    for t, n in by_topic.most_common():
        print(f"| {t} | {docs_topic[t]} | {n:,} | {100 * n / total:.1f}% |")
    print("\n| language | documents | tokens | share |\n|---|---:|---:|---:|")
    for t, n in by_lang.most_common():
        print(f"| {t} | {docs_lang[t]} | {n:,} | {100 * n / total:.1f}% |")
    text = "\n".join(d["text"] for d in docs)
    for phrase in ("Golden Gate Bridge", "Golden Gate", "Eiffel Tower", "San Francisco", "Paris"):
        print(f"mentions of {phrase!r}: {text.count(phrase)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", metavar="TOKENIZER_DIR", help="print Gemma token counts using this tokenizer")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    docs = build()
    write(docs, args.out)
    print(f"wrote {len(docs)} documents to {args.out} ({args.out.stat().st_size:,} bytes)")
    if args.stats:
        stats(docs, args.stats)


if __name__ == "__main__":
    main()
