"""What the playground offers as an example (also what its tests type in)."""

# The seed example of the "Rerank server" issue: the third document is the odd one out.
EXAMPLE_QUERY = "How to optimize database query performance?"
EXAMPLE_DOCUMENTS = (
    "Using indexes can speed up queries.",
    "Regularly cleaning unused data improves IO efficiency.",
    "Choosing the right data structure is key to algorithm design.",
    "Caching hot data effectively reduces database pressure.",
)
