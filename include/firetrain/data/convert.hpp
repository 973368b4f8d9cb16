/// @brief Converters from common image-classification formats to the dataset contract
/// (see dataset.hpp and datasets/README.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ft {

/// Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...)
/// -> out_dir/fashion-mnist-train.h5 and out_dir/fashion-mnist-test.h5: uint8 (N, 28, 28, 1),
/// the 10 official class names, and the training set's mean/std in both files. Bad magic
/// numbers, sizes or truncated files throw ft::InputError naming the file.
void convert_fashion_mnist(const std::string& src_dir, const std::string& out_dir);

/// CIFAR-10 binary version (data_batch_1..5.bin, test_batch.bin, batches.meta.txt) ->
/// out_dir/cifar10-train.h5 and out_dir/cifar10-test.h5: uint8 (N, 32, 32, 3) (from CHW
/// records), the class names of batches.meta.txt (or the official ones if it is absent), and the
/// training set's per-channel mean/std in both files.
void convert_cifar10(const std::string& src_dir, const std::string& out_dir);

/// An image-folder tree (one sub-folder per class, sorted names -> class indices; .jpg/.jpeg/.png
/// files, sorted) -> out_path: RGB uint8 (N, size, size, 3), each image resized (bilinear) so
/// that its shorter side is `size`, then center-cropped; mean/std computed over these images.
/// Unreadable images throw ft::InputError naming the file.
void convert_folder(const std::string& src_dir, const std::string& out_path, int size);

/// Decodes a JPEG or PNG file (by its magic bytes) to RGB (H, W, 3). ft::InputError otherwise.
std::vector<uint8_t> read_image_rgb(const std::string& path, int& h, int& w);

/// Resizes RGB (h, w, 3) so the shorter side is `size` (bilinear, half-pixel centers), then
/// center-crops size x size. Returns (size, size, 3).
std::vector<uint8_t> resize_center_crop(const std::vector<uint8_t>& img, int h, int w, int size);

}  // namespace ft
