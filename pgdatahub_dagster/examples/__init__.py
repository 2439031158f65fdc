"""Examples of building on the warehouse's tables; not part of the product's code location."""
