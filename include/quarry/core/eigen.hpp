// Zero-copy Eigen interop: a rank-2 f32/f64 view as an Eigen::Map, and an Eigen matrix as a view.
#pragma once

#include <type_traits>

#include <Eigen/Core>
#include <fmt/format.h>

#include "quarry/core/tensor.hpp"

namespace quarry {

/// The Eigen row-major dynamic matrix type for T (float or double).
template <class T>
using EigenRowMajor = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// An Eigen::Map over a rank-2 view, without copying. The inner (column) stride must be 1; the
/// row stride may exceed the column count (a column slice of a wider matrix).
/// Mutations through the map write the tensor's memory.
template <class T>
  requires(std::is_same_v<std::remove_const_t<T>, float> || std::is_same_v<std::remove_const_t<T>, double>)
auto as_eigen(TensorView<T> v) {
  using Matrix = std::conditional_t<std::is_const_v<T>, const EigenRowMajor<T>, EigenRowMajor<T>>;
  using Map = Eigen::Map<Matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
  if (v.rank() != 2)
    throw_error(errc::shape_mismatch, fmt::format("as_eigen needs a rank-2 view; shape is {}", v.shape()));
  if (v.dim(1) > 1 && v.strides()[1] != 1)
    throw_error(errc::shape_mismatch, fmt::format("as_eigen needs unit column stride; shape {} has strides {}", v.shape(), v.strides()));
  if (v.dim(0) > 1 && v.strides()[0] < v.dim(1))
    throw_error(errc::shape_mismatch, fmt::format("as_eigen needs row stride >= columns; shape {} has strides {}", v.shape(), v.strides()));
  const Eigen::Index outer = v.dim(0) > 1 ? v.strides()[0] : v.dim(1);
  return Map(v.data(), v.dim(0), v.dim(1), Eigen::OuterStride<>(outer));
}

/// as_eigen() of a whole tensor (lvalues only: the map must not outlive the tensor).
///@{
template <class T>
auto as_eigen(Tensor<T>& t) { return as_eigen(t.view()); }
template <class T>
auto as_eigen(const Tensor<T>& t) { return as_eigen(t.view()); }
///@}

/// A view of an Eigen row-major matrix's memory, shape [rows, cols], without copying.
template <class Derived>
auto view_of(Eigen::PlainObjectBase<Derived>& m) {
  using Scalar = typename Derived::Scalar;
  static_assert(Derived::IsRowMajor || Derived::ColsAtCompileTime == 1,
                "view_of needs a row-major matrix; for column-major use view_of(m).t() on its transpose");
  return TensorView<Scalar>(m.data(), Shape{m.rows(), m.cols()});
}
/// A read-only view of a const Eigen row-major matrix's memory.
template <class Derived>
auto view_of(const Eigen::PlainObjectBase<Derived>& m) {
  using Scalar = typename Derived::Scalar;
  static_assert(Derived::IsRowMajor || Derived::ColsAtCompileTime == 1,
                "view_of needs a row-major matrix");
  return TensorView<const Scalar>(m.data(), Shape{m.rows(), m.cols()});
}

}  // namespace quarry
