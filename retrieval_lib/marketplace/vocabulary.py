"""The marketplace's words: taxonomy, facets, and how sellers and buyers say the same thing.

Every product type and facet value has three kinds of surface forms:

* ``common``: the plain word both sides use ("necklace", "blue");
* ``seller``: catalogue language that buyers rarely type ("pendant", "cobalt");
* ``buyer``: colloquial words that sellers rarely write ("choker", "navy blue").

The split between seller and buyer forms is what creates the *semantic gap* of chapter 2.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    """One concept (a product type or a facet value) and its surface forms."""

    name: str
    common: tuple[str, ...]
    seller: tuple[str, ...]
    buyer: tuple[str, ...]


def _t(name: str, common: str, seller: str, buyer: str) -> Term:
    """Build a :class:`Term` from comma-separated form lists (keeps the tables below readable)."""

    def split(s: str) -> tuple[str, ...]:
        return tuple(w.strip() for w in s.split(",") if w.strip())

    return Term(name, split(common), split(seller), split(buyer))


#: Top-level categories with their product types (taxonomy level 2).
CATEGORIES: dict[str, tuple[Term, ...]] = {
    "jewelry": (
        _t("necklace", "necklace", "pendant, lavaliere, collar necklace", "choker, chain, neckless"),
        _t("ring", "ring", "band, signet, solitaire", "stacker, knuckle bling, promise"),
        _t("earrings", "earrings", "ear drops, ear posts, ear jewels", "studs, hoops, dangles"),
        _t("bracelet", "bracelet", "bangle, wristlet, cuff", "wrist band, arm candy, armlet"),
        _t("anklet", "anklet", "ankle bracelet, ankle chain", "foot jewels, beachy foot, toe jewel"),
    ),
    "home decor": (
        _t("candle", "candle", "votive, taper, soy pillar", "wax melt, scented jar, tealight"),
        _t("vase", "vase", "vessel, urn, amphora", "flower pot, flower holder, bud jar"),
        _t("pillow", "pillow", "sham, bolster, slipcover", "cushion, couch cushion, pillowcase"),
        _t("wall hanging", "wall hanging", "tapestry, macrame, textile art", "room decor, weaving, hippie decor"),
        _t("blanket", "blanket", "throw, coverlet, afghan", "cozy rug, quilt, snuggle rug"),
    ),
    "art": (
        _t("print", "print", "giclee, lithograph, reproduction", "poster, wall art, picture"),
        _t("painting", "painting", "original canvas, acrylic on canvas, oil study", "artwork, painted picture, wall piece"),
        _t("sculpture", "sculpture", "figurine, statuette, bust", "statue, ornament, figure"),
        _t("photograph", "photograph", "photographic giclee, fine art photo, c-print", "pic, snapshot, picture"),
    ),
    "clothing": (
        _t("t-shirt", "t-shirt", "crewneck, graphic top, jersey top", "tshirt, tee, tees"),
        _t("dress", "dress", "frock, gown, shift", "sundress, maxi, outfit"),
        _t("sweater", "sweater", "pullover, knitwear, cardigan", "jumper, sweatshirt, hoodie"),
        _t("scarf", "scarf", "shawl, stole, wrap", "neck warmer, snood, bandana"),
        _t("hat", "hat", "beanie, cloche, fedora", "cap, bonnet, toque"),
    ),
    "bags": (
        _t("tote bag", "tote bag", "carryall, shopper, market tote", "shopping sack, reusable sack, grocery carrier"),
        _t("backpack", "backpack", "rucksack, knapsack, daypack", "bookbag, schoolbag, travel pack"),
        _t("wallet", "wallet", "billfold, card holder, coin purse", "money clip, pocket case, cash clip"),
        _t("handbag", "handbag", "clutch, satchel, crossbody", "purse, shoulder tote, pocketbook"),
    ),
    "kitchen": (
        _t("mug", "mug", "tumbler, beaker, stein", "coffee cup, teacup, cuppa"),
        _t("cutting board", "cutting board", "chopping block, charcuterie tray, serving plank",
           "cheese platter, butcher slab, chopper"),
        _t("apron", "apron", "pinafore, smock, chef coverall", "cooking bib, kitchen bib, bib"),
        _t("bowl", "bowl", "serving vessel, salad server, porringer", "dish, soup dish, cereal dish"),
    ),
    "stationery": (
        _t("notebook", "notebook", "journal, sketchbook, notepad", "diary, writing pad, jotter"),
        _t("planner", "planner", "agenda, organizer, calendar insert", "schedule book, to do list, datebook"),
        _t("sticker", "sticker", "vinyl die cut, kiss cut, adhesive art", "laptop decal, label, waterbottle decal"),
        _t("greeting card", "greeting card", "notecard, folded stationery, letterpress", "bday note, thank you note, love note"),
    ),
    "toys": (
        _t("plush", "plush", "stuffed animal, soft sculpture, amigurumi", "stuffie, teddy, cuddly toy"),
        _t("puzzle", "puzzle", "jigsaw, brain teaser, tangram", "puzzles, game, brainteaser"),
        _t("doll", "doll", "rag figure, art figure, poppet", "dolly, barbie, playmate"),
        _t("baby rattle", "baby rattle", "teether, grasping clacker, infant grasper", "shaker, teething toy, jingle toy"),
    ),
}

#: Facet values, shared by all categories except materials.
COLOURS: tuple[Term, ...] = (
    _t("blue", "blue", "cobalt, azure, cerulean", "navy, sky, turquoise"),
    _t("red", "red", "crimson, scarlet, burgundy", "cherry, wine, ruby"),
    _t("green", "green", "sage, olive, emerald", "mint, forest, lime"),
    _t("pink", "pink", "blush, rose, fuchsia", "pinky, bubblegum, salmon"),
    _t("black", "black", "onyx, ebony, jet", "dark, blk, noir"),
    _t("white", "white", "ivory, alabaster, cream", "snowy, whte, bright"),
    _t("yellow", "yellow", "mustard, ochre, saffron", "sunny, lemon, yelow"),
    _t("purple", "purple", "amethyst, violet, plum", "lilac, lavender, purpel"),
    _t("brown", "brown", "chestnut, cognac, walnut", "tan, chocolate, camel"),
    _t("grey", "grey", "charcoal, slate, pewter", "gray, ash, graphite"),
)

STYLES: tuple[Term, ...] = (
    _t("boho", "boho", "bohemian, free spirit, folk", "hippie, gypsy, festival"),
    _t("minimalist", "minimalist", "understated, clean line, refined", "simple, dainty, plain"),
    _t("vintage", "vintage", "antique style, heirloom, period piece", "old fashioned, retro, granny"),
    _t("rustic", "rustic", "farmhouse, reclaimed, primitive", "country, cabin, barn"),
    _t("modern", "modern", "contemporary, geometric, mid century", "sleek, trendy, cool"),
    _t("cottagecore", "cottagecore", "pastoral, romantic floral, prairie", "cottage, fairy, garden"),
    _t("gothic", "gothic", "dark academia, victorian gothic, occult", "goth, witchy, spooky"),
    _t("kawaii", "kawaii", "whimsical, playful, chibi", "cute, adorable, anime"),
)

OCCASIONS: tuple[Term, ...] = (
    _t("wedding", "wedding", "bridal, nuptial, bridesmaid", "bride, marriage, big day"),
    _t("birthday", "birthday", "natal day, celebration, party", "bday, bday party, bday present"),
    _t("christmas", "christmas", "yuletide, holiday season, noel", "xmas, stocking stuffer, secret santa"),
    _t("anniversary", "anniversary", "milestone, commemorative, keepsake", "anniversery, love present, couples"),
    _t("baby shower", "baby shower", "new arrival, nursery, christening", "newborn, expecting, mom to be"),
)

RECIPIENTS: tuple[Term, ...] = (
    _t("mom", "mom", "mother, maternal, matriarch", "mum, mommy, mama"),
    _t("dad", "dad", "father, paternal, patriarch", "daddy, papa, pops"),
    _t("her", "her", "women, ladies, feminine", "girlfriend, wife, sister"),
    _t("him", "him", "men, gentlemen, masculine", "boyfriend, husband, brother"),
    _t("kids", "kids", "children, youth, juvenile", "child, toddler, little ones"),
    _t("teacher", "teacher", "educator, tutor, instructor", "classroom, school staff, end of term"),
)

#: Materials are category-specific.
MATERIALS: dict[str, tuple[Term, ...]] = {
    "jewelry": (
        _t("silver", "silver", "sterling silver, 925 silver, argentium", "silvr, shiny metal, chrome"),
        _t("gold", "gold", "14k gold fill, gold vermeil, 18k gold", "golden, goldd, gilded"),
        _t("pearl", "pearl", "freshwater pearl, baroque pearl, mother of pearl", "pearls, pearly, perl"),
        _t("gemstone", "gemstone", "quartz, semi precious, birthstone", "crystals, stone, gem"),
    ),
    "home decor": (
        _t("ceramic", "ceramic", "stoneware, porcelain, earthenware", "pottery, clay, ceramics"),
        _t("wood", "wood", "walnut wood, oak, reclaimed barnwood", "wooden, timber, woodn"),
        _t("glass", "glass", "blown glass, borosilicate, crystal glass", "see through, jar, glas"),
        _t("cotton", "cotton", "organic cotton, muslin, cotton canvas", "soft fabric, cloth, cottn"),
    ),
    "art": (
        _t("canvas", "canvas", "stretched canvas, gallery wrap, linen canvas", "framed, canvis, on frame"),
        _t("paper", "paper", "archival paper, cotton rag, fine art paper", "cardstock, papr, poster stock"),
        _t("clay", "clay", "terracotta, polymer clay, porcelain clay", "pottery, ceramic, playdough"),
        _t("metal", "metal", "bronze, brass, cast iron", "steel, metallic, tin"),
    ),
    "clothing": (
        _t("cotton", "cotton", "organic cotton, pima cotton, cotton jersey", "cottn, soft knit, comfy fabric"),
        _t("linen", "linen", "flax linen, washed linen, linen blend", "breathable, linnen, natural fabric"),
        _t("wool", "wool", "merino, alpaca, cashmere blend", "woolen, warm knit, wooly"),
        _t("silk", "silk", "mulberry silk, charmeuse, habotai", "satin, silky, sillk"),
    ),
    "bags": (
        _t("leather", "leather", "full grain leather, vegetable tanned leather, nubuck", "lether, hide, real hide"),
        _t("canvas", "canvas", "waxed canvas, cotton duck, heavy canvas", "fabric, canvis, cloth"),
        _t("vegan leather", "vegan leather", "faux leather, cork leather, pu leather", "pleather, cruelty free, plant based"),
        _t("denim", "denim", "selvedge denim, upcycled denim, chambray", "jeans, jean, denum"),
    ),
    "kitchen": (
        _t("ceramic", "ceramic", "stoneware, porcelain, earthenware", "pottery, clay, ceramics"),
        _t("wood", "wood", "olive wood, maple, acacia", "wooden, timber, woodn"),
        _t("linen", "linen", "flax linen, washed linen, linen blend", "cloth, fabric, linnen"),
        _t("enamel", "enamel", "enamelware, vitreous enamel, enamel coated", "camping, tin, enamle"),
    ),
    "stationery": (
        _t("paper", "paper", "recycled paper, kraft paper, cotton paper", "card stock, papery, papr"),
        _t("leather", "leather", "full grain leather, refillable leather cover, vegetable tanned", "lether, hide bound, real hide"),
        _t("vinyl", "vinyl", "weatherproof vinyl, matte vinyl, holographic vinyl", "plastic, waterproof, vynil"),
        _t("linen", "linen", "linen cover, bookcloth, clothbound", "fabric, cloth, linnen"),
    ),
    "toys": (
        _t("wood", "wood", "beech wood, maple, sustainable hardwood", "wooden, woodn, natural"),
        _t("cotton", "cotton", "organic cotton, muslin, cotton knit", "soft, cloth, cottn"),
        _t("wool", "wool", "needle felted wool, merino, felted merino", "felt, wooly, woolen"),
        _t("crochet", "crochet", "hand crocheted, amigurumi, crocheted cotton", "knitted, yarn, hooked"),
    ),
}

#: Aesthetics: the hidden taste clusters of listings. Buyers name them in queries ("cottagecore" style
#: searches); sellers almost never write them, so only engagement can reveal which listing has which.
AESTHETICS: tuple[Term, ...] = tuple(
    _t(name, name, name, name) for name in (
        "y2k", "coastal", "academia", "fairycore", "grandmillennial", "deco", "bauhaus", "scandi",
        "japandi", "wabisabi", "maximalist", "preppy", "grunge", "western", "tropical", "nautical",
        "celestial", "botanical", "seventies", "mod", "shabby chic", "industrial", "whimsigoth", "southwestern",
    )
)

#: Words that sellers add to titles and that say nothing about the product.
SELLER_FILLER: tuple[str, ...] = (
    "handmade", "personalized", "custom", "unique", "gift", "artisan", "one of a kind",
    "made to order", "eco friendly", "small batch",
)

#: Facets of an intent or a listing besides the product type.
FACETS: tuple[str, ...] = ("aesthetic", "style", "colour", "material", "recipient", "occasion")

#: Words shop names are made of ("wren & moss studio"): idiosyncratic, they say nothing about products.
SHOP_NAME_FIRST: tuple[str, ...] = (
    "wren", "moss", "juniper", "fable", "ember", "clover", "hollow", "marigold", "tansy", "bramble",
    "otter", "finch", "sorrel", "quill", "pebble", "thistle", "larkspur", "willow", "birch", "hazel",
    "nettle", "sparrow", "briar", "poppy", "rowan", "kestrel", "tamsin", "oriel", "linden", "yarrow",
)
SHOP_NAME_SECOND: tuple[str, ...] = (
    "studio", "atelier", "workshop", "house", "goods", "makery", "loft", "collective", "and co", "lane",
)

#: What sellers of *vague* listings write instead of describing the product.
VAGUE_PHRASES: tuple[str, ...] = (
    "perfect gift", "made with love", "something special", "little treasure", "new collection",
    "our bestseller", "handmade with care", "just for you", "shop favourite", "limited drop",
)
