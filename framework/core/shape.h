// Shapes and strides (in elements), and helpers to print and combine them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fam {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

int64_t NumElements(const Shape& shape);
Strides ContiguousStrides(const Shape& shape);
std::string ShapeString(const Shape& shape);  // "[2, 3, 4]"
// Normalises a possibly negative axis for a tensor of rank `rank`; throws on out of range.
int NormalizeAxis(int64_t axis, int64_t rank);
// NumPy broadcasting of two shapes; throws naming both shapes when incompatible.
Shape BroadcastShapes(const Shape& a, const Shape& b);

}  // namespace fam
